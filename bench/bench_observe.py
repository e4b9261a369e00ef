"""Observability overhead: a point read and a 20-row list with everything on (slow-query log at a
1 s threshold, query statistics, N+1 detection "warn", the Prometheus collector registered)
against the same database with nothing installed, in one run.

Each operation is a whole ``db.session()`` block: ``session.get`` of a different row of 10,000
each call, or a select of the 20 rows after a moving id. The two databases share the URL and the
table; the "off" one has no observer, so nothing of dalkit.observe runs for it (the N+1 listener
on the Session class is shared, and returns at once for its sessions). Targets from the issue:
at most 5% overhead on PostgreSQL, 10% on SQLite. The summary adds this process's CPU time per
operation (median of 5 rounds of 150 calls), less moved than ops/s by other work on the machine.
"""

from __future__ import annotations

import statistics
from itertools import count
from time import process_time
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.timing import interleaved_samples, median_and_spread, paired_ratio
from dalkit import Database
from dalkit.observe import install
from dalkit.observe.prometheus import register

ROWS = 10_000
#: most overhead allowed, as a ratio of on to off (ops/s)
TARGETS = {"postgresql": 0.95, "sqlite": 0.90}


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_observe_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    price: Mapped[int]


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend, url in (("postgresql", pg_url), ("sqlite", sqlite_url)):
        driver = "postgresql+psycopg" if backend == "postgresql" else "sqlite"
        full_url = make_url(url).set(drivername=driver).render_as_string(hide_password=False)
        plain, observed = Database(full_url), Database(full_url)
        try:
            _fill(plain)
            install(observed.engine, {"slow_query_ms": 1000, "nplusone": "warn"})
            register(observed, "bench", registry=CollectorRegistry())
            observed.health_check()  # both pools hold a connection before the timing starts
            rows += _measure(backend, plain, observed)
        finally:
            with plain.engine.begin() as connection:
                Base.metadata.drop_all(connection)
            plain.dispose()
            observed.dispose()
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    by_name = {row["name"]: row for row in rows}
    lines = []
    for row in rows:
        if row.get("ratio") is None:
            continue
        backend = row["name"].split(":")[0]
        target = TARGETS[backend]
        overhead = (1.0 - row["ratio"]) * 100.0
        verdict = "meets" if row["ratio"] >= target else "misses"
        off_cpu = by_name[row["baseline"]]["cpu_us"]
        lines.append(
            f"- {row['name']}: {overhead:+.1f}% overhead against all off: {verdict} the "
            f"{(1 - target) * 100:.0f}% target; client CPU {off_cpu:.0f} -> {row['cpu_us']:.0f} "
            f"us per operation ({row['cpu_us'] - off_cpu:+.1f} us)"
        )
    return "\n".join(lines)


def _client_cpu_us(variants: dict[str, Any], calls: int = 150, rounds: int = 5) -> dict[str, float]:
    """Median CPU time of this process per call, in microseconds: less moved than ops/s when
    other work shares the cores (the database server's own CPU is not in it)."""
    found: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, operation in variants.items():
            started = process_time()
            for _ in range(calls):
                operation()
            found[name].append((process_time() - started) / calls * 1e6)
    return {name: statistics.median(times) for name, times in found.items()}


def _fill(db: Database) -> None:
    with db.engine.begin() as connection:
        Base.metadata.drop_all(connection)
        Base.metadata.create_all(connection)
        connection.execute(
            sa.insert(Item), [{"id": i, "name": f"item {i}", "price": i % 997} for i in range(ROWS)]
        )


def _point_read(db: Database) -> Any:
    ids = count()

    def read() -> None:
        with db.session() as session:
            session.get(Item, next(ids) % ROWS)

    return read


def _list(db: Database) -> Any:
    starts = count(step=20)

    def read() -> None:
        with db.session() as session:
            start = next(starts) % (ROWS - 20)
            session.scalars(
                sa.select(Item).where(Item.id > start).order_by(Item.id).limit(20)
            ).all()

    return read


def _measure(backend: str, plain: Database, observed: Database) -> list[dict[str, Any]]:
    variants = {
        "point read, all off": _point_read(plain),
        "point read, all on": _point_read(observed),
        "20-row list, all off": _list(plain),
        "20-row list, all on": _list(observed),
    }
    samples = interleaved_samples(variants, batch_s=0.1)
    cpu = _client_cpu_us(variants)
    out = []
    for name, batches in samples.items():
        ops, spread = median_and_spread(batches)
        row: dict[str, Any] = {
            "name": f"{backend}: {name}",
            "ops_per_s": ops,
            "spread_pct": spread,
            "baseline": None,
            "cpu_us": cpu[name],
        }
        if name.endswith("all on"):
            baseline = name.replace("all on", "all off")
            ratio, ratio_spread = paired_ratio(batches, samples[baseline])
            row.update(
                baseline=f"{backend}: {baseline}", ratio=ratio, ratio_spread_pct=ratio_spread
            )
        out.append(row)
    return out
