"""Read replicas on a throwaway primary + streaming replica pair (both on this machine): one-row
read-only transactions served by the primary of a plain ``Database``, by the replica of a
``Database(..., replicas=[...])``, and by a router whose only "replica" is the primary itself
(the router's own cost per read; target: at most 5% against the plain read). The same three for
a ``select()`` in a default transaction (what a repository read sends), which
``route_reads="auto"`` routes per statement.

What the figures cannot show: both servers share this machine's cores, so a replica adds no
capacity here; the read rates compare per-read latency of one client, not a cluster's
throughput. A replica pays off when it runs on hardware of its own.
"""

from __future__ import annotations

import contextvars
from contextlib import ExitStack
from typing import Any

from sqlalchemy import Select, column, select, table, text
from sqlalchemy.orm import Session

from bench.timing import Operation, interleaved_samples, median_and_spread, paired_ratio
from dalkit import Database
from dalkit.testing.replication import Replication, current_lsn

OVERHEAD_TARGET_PCT = 5.0
BASELINES: dict[str, str | None] = {
    "read: plain Database (primary)": None,
    "read: routed to the replica": "read: plain Database (primary)",
    "read: routed, primary as its replica": "read: plain Database (primary)",
    "default-transaction select: plain Database (primary)": None,
    "default-transaction select: routed to the replica": (
        "default-transaction select: plain Database (primary)"
    ),
    "default-transaction select: routed, primary as its replica": (
        "default-transaction select: plain Database (primary)"
    ),
}
_ONE_ROW: Select[Any] = (
    select(column("name")).select_from(table("bench_rows")).where(column("id") == 7)
)


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    with ExitStack() as cleanup:
        pair = cleanup.enter_context(Replication())
        primary, replica = pair.create_database("dalkit_bench_replicas")
        primary = primary.replace("postgresql://", "postgresql+psycopg://")
        plain = cleanup.enter_context(Database(primary))
        plain.sql("CREATE TABLE bench_rows (id int PRIMARY KEY, name text NOT NULL)")
        plain.sql("INSERT INTO bench_rows SELECT i, 'row ' || i FROM generate_series(1, 1000) i")
        pair.replica.wait_for(current_lsn(pair.primary.url))
        routed = cleanup.enter_context(Database(primary, replicas=[replica]))
        to_itself = cleanup.enter_context(Database(primary, replicas=[primary]))
        samples = interleaved_samples(
            {
                "read: plain Database (primary)": _read(plain),
                "read: routed to the replica": _read(routed),
                "read: routed, primary as its replica": _read(to_itself),
                "default-transaction select: plain Database (primary)": _select(plain),
                "default-transaction select: routed to the replica": _select(routed),
                "default-transaction select: routed, primary as its replica": _select(to_itself),
            }
        )
    rows = []
    for name, batches in samples.items():
        ops, spread = median_and_spread(batches)
        row: dict[str, Any] = {"name": name, "ops_per_s": ops, "baseline": None}
        row["spread_pct"] = spread
        baseline = BASELINES[name]
        if baseline is not None:
            row["baseline"] = baseline
            row["ratio"], row["ratio_spread_pct"] = paired_ratio(batches, samples[baseline])
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row["baseline"] is None:
            continue
        cost = 100.0 * (1.0 / row["ratio"] - 1.0)
        line = f"- {row['name']}: {cost:+.1f}% time per read against the plain read"
        if "primary as its replica" in row["name"]:
            verdict = "within" if cost <= OVERHEAD_TARGET_PCT else "over"
            line += f" (the router's overhead): {verdict} the {OVERHEAD_TARGET_PCT:.0f}% target"
        lines.append(line)
    return "\n".join(lines)


def _read(db: Database) -> Operation:
    read_only = db.transactional(read_only=True)

    def one_row(session: Session) -> object:
        return session.execute(text("SELECT name FROM bench_rows WHERE id = 7")).scalar_one()

    def read() -> None:
        # a request that wrote nothing: read-your-writes never sends it to the primary
        contextvars.Context().run(read_only.run, one_row)

    return read


def _select(db: Database) -> Operation:
    def one_row(session: Session) -> object:
        return session.execute(_ONE_ROW).scalar_one()

    def read() -> None:
        contextvars.Context().run(db.run_transaction, one_row)

    return read
