"""Unit of work: the cost of the audit log, and outbox relay throughput.

"audited update" is one unit of work that loads a row by key, changes two columns and commits,
on a model with the ``Audited`` mixin (so it also writes one ``dalkit_audit_log`` row); its
baseline is the same unit of work on an identical model without it. The relay rows fill the
outbox with 5,000 events of 100 aggregates, then time one relay draining it in rounds of 500
(no-op publisher: the relay's own cost; EventBus publisher: events read back and dispatched
in-process); each figure is events/s over the whole drain, the median of 5 drains.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.timing import interleaved_samples, median_and_spread, paired_ratio
from dalkit import Audited, Database, DomainEvent, EventBus, OutboxMessage, UnitOfWork
from dalkit.outbox.messages import event_type
from dalkit.outbox.publishers import EventBusPublisher
from dalkit.outbox.relay import OutboxRelay
from dalkit.tables import outbox

PLAIN = "unit of work, update (not audited)"
AUDITED = "unit of work, update (audited)"
RELAY_NULL = "outbox relay, no-op publisher (events/s)"
RELAY_BUS = "outbox relay, EventBus publisher (events/s)"

#: what the audit may cost: an audited write at most 1.3x the time of the same write
AUDIT_TARGET_RATIO = 1.3
#: what one relay should deliver on PostgreSQL
RELAY_TARGET_PER_S = 5_000.0

EVENTS = 5_000
AGGREGATES = 100
RELAY_REPEATS = 5


class _Base(DeclarativeBase):
    pass


class PlainItem(_Base):
    __tablename__ = "bench_plain_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    counter: Mapped[int] = mapped_column(default=0)


class AuditedItem(Audited, _Base):
    __tablename__ = "bench_audited_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    counter: Mapped[int] = mapped_column(default=0)


@event_type("bench.ticked", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class Ticked(DomainEvent):
    n: int


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    rows = _audit_rows("postgresql", _psycopg(pg_url))
    rows += _audit_rows("sqlite", sqlite_url)
    rows += _relay_rows(_psycopg(pg_url))
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    by_name = {row["name"]: row for row in rows}
    lines = []
    for backend in ("postgresql", "sqlite"):
        ratio = by_name[f"{backend}: {AUDITED}"]["ratio"]
        cost = 1.0 / ratio
        verdict = "within" if cost <= AUDIT_TARGET_RATIO else "over"
        lines.append(
            f"- {backend}: an audited update takes {cost:.2f}x the time of the same update "
            f"without audit: {verdict} the {AUDIT_TARGET_RATIO}x target"
        )
    for name in (RELAY_NULL, RELAY_BUS):
        rate = by_name[f"postgresql: {name}"]["ops_per_s"]
        verdict = "meets" if rate >= RELAY_TARGET_PER_S else "misses"
        lines.append(
            f"- postgresql: {name.split(',')[1].strip()}: {rate:,.0f} events/s, "
            f"{verdict} the {RELAY_TARGET_PER_S:,.0f}/s target"
        )
    return "\n".join(lines)


def _psycopg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(False)


def _audit_rows(backend: str, url: str) -> list[dict[str, Any]]:
    with ExitStack() as cleanup:
        db = cleanup.enter_context(Database(url))
        _Base.metadata.drop_all(db.engine)
        db.create_all(_Base.metadata)
        with db.session() as session:
            session.add_all([PlainItem(id=1, name="x"), AuditedItem(id=1, name="x")])
        samples = interleaved_samples(
            {PLAIN: _update(db, PlainItem), AUDITED: _update(db, AuditedItem)}
        )
        with db.session() as session:
            session.execute(sa.text("DELETE FROM dalkit_audit_log"))
    rows = []
    for name, batches in samples.items():
        ops, spread = median_and_spread(batches)
        row: dict[str, Any] = {"name": f"{backend}: {name}", "ops_per_s": ops, "baseline": None}
        row["spread_pct"] = spread
        if name == AUDITED:
            row["baseline"] = f"{backend}: {PLAIN}"
            row["ratio"], row["ratio_spread_pct"] = paired_ratio(batches, samples[PLAIN])
        rows.append(row)
    return rows


def _update(db: Database, model: type[PlainItem] | type[AuditedItem]) -> Any:
    def operation() -> None:
        with UnitOfWork(db, actor="bench") as uow:
            item = uow.session.get(model, 1)
            assert item is not None
            item.counter += 1
            item.name = f"x{item.counter}"

    return operation


class _NullPublisher:
    shares_transaction = False  # the relay's own cost: no savepoint per message

    def publish(self, message: OutboxMessage) -> None:
        return None


def _relay_rows(url: str) -> list[dict[str, Any]]:
    bus = EventBus()
    bus.subscribe(Ticked, lambda event: None)
    publishers = {RELAY_NULL: _NullPublisher(), RELAY_BUS: EventBusPublisher(bus)}
    rates: dict[str, list[float]] = {name: [] for name in publishers}
    with Database(url) as db:
        db.create_all()
        for _ in range(RELAY_REPEATS):
            for name, publisher in publishers.items():
                _fill(db)
                relay = OutboxRelay(db, publisher, batch_size=500)
                started = time.perf_counter()
                sent = 0
                while not (result := relay.run_once()).idle:
                    sent += result.published
                rates[name].append(sent / (time.perf_counter() - started))
    rows = []
    for name, samples in rates.items():
        ops, spread = median_and_spread(samples)
        rows.append(
            {
                "name": f"postgresql: {name}",
                "ops_per_s": ops,
                "baseline": None,
                "spread_pct": spread,
            }
        )
    return rows


def _fill(db: Database) -> None:
    with db.session() as session:
        session.execute(outbox.delete())
    for start in range(0, EVENTS, 500):
        with UnitOfWork(db, outbox=True) as uow:
            for n in range(start, start + 500):
                uow.publish(Ticked(n=n), aggregate=("Ticker", n % AGGREGATES))
    with db.connection() as connection:
        # as a long-running outbox would be: the planner knows the table
        connection.exec_driver_sql("ANALYZE dalkit_outbox")
