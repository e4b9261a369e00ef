"""The transaction runner's cost: ``run_transaction`` / ``@transactional`` / ``db.transaction()``
against a plain ``session.begin()`` on the same Database, empty and with a one-row update.

Both sides share the engine, pool and hooks, so the ratio is the runner alone: options, the
context variable, callbacks, statistics and the retry loop (which never retries here). An
empty plain ``session.begin()`` never touches the database, and neither does an empty
``run_transaction``: that pair measures pure Python overhead. On SQLite the runner's writers
open with ``BEGIN IMMEDIATE``, which SQLite itself makes dearer than ``BEGIN``: the runner is
compared with a plain session doing the same, and that session with a plain ``BEGIN``.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.timing import Operation, interleaved_samples, median_and_spread, paired_ratio
from dalkit import Database
from dalkit.engine.build import SQLITE_BEGIN_OPTION

#: What the runner may cost against a plain session.begin(), as the issue asks.
TARGET_PCT = 10.0

PLAIN_EMPTY = "session.begin(), empty"
RUNNER_EMPTY = "run_transaction(), empty"
PLAIN_UPDATE = "session.begin(), one-row update"
IMMEDIATE_UPDATE = "session.begin() with BEGIN IMMEDIATE, one-row update"
DECORATED_UPDATE = "@transactional, one-row update"
BLOCK_UPDATE = "db.transaction(), one-row update"
# backend -> variant -> the variant it is compared against
BASELINES: dict[str, dict[str, str | None]] = {
    "postgresql": {
        PLAIN_EMPTY: None,
        RUNNER_EMPTY: PLAIN_EMPTY,
        PLAIN_UPDATE: None,
        DECORATED_UPDATE: PLAIN_UPDATE,
        BLOCK_UPDATE: PLAIN_UPDATE,
    },
    "sqlite": {
        PLAIN_EMPTY: None,
        RUNNER_EMPTY: PLAIN_EMPTY,
        PLAIN_UPDATE: None,
        IMMEDIATE_UPDATE: PLAIN_UPDATE,
        DECORATED_UPDATE: IMMEDIATE_UPDATE,
        BLOCK_UPDATE: IMMEDIATE_UPDATE,
    },
}

_metadata = sa.MetaData()
_counters = sa.Table(
    "bench_tx_counters",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("n", sa.Integer, nullable=False),
)
_BUMP = _counters.update().where(_counters.c.id == 1).values(n=_counters.c.n + 1)


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    return _measure("postgresql", pg_url) + _measure("sqlite", sqlite_url)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Each runner variant's cost against its plain baseline, and the verdict."""
    lines = []
    for row in rows:
        if row["baseline"] is None or IMMEDIATE_UPDATE in row["name"]:
            continue
        cost_pct = 100.0 * (1.0 / row["ratio"] - 1.0)
        baseline_ops = next(r["ops_per_s"] for r in rows if r["name"] == row["baseline"])
        extra_us = 1e6 * (1.0 / (baseline_ops * row["ratio"]) - 1.0 / baseline_ops)
        verdict = "within" if cost_pct <= TARGET_PCT else "over"
        lines.append(
            f"- {row['name']}: {cost_pct:+.1f}% time ({extra_us:+.1f} µs) against "
            f"{row['baseline']} (paired-ratio spread {row['ratio_spread_pct']:.1f}%): "
            f"{verdict} the {TARGET_PCT:.0f}% target"
        )
    return "\n".join(lines)


def _measure(backend: str, url: str) -> list[dict[str, Any]]:
    with ExitStack() as cleanup:
        db = cleanup.enter_context(Database(url))
        with db.engine.begin() as connection:
            _metadata.drop_all(connection)
            _metadata.create_all(connection)
            connection.execute(_counters.insert().values(id=1, n=0))
        cleanup.callback(_drop, db)
        baselines = BASELINES[backend]
        variants = _variants(db)
        samples = interleaved_samples({name: variants[name] for name in baselines})
    rows = []
    for name, batches in samples.items():
        ops, spread = median_and_spread(batches)
        row: dict[str, Any] = {"name": f"{backend}: {name}", "ops_per_s": ops, "baseline": None}
        row["spread_pct"] = spread
        baseline = baselines[name]
        if baseline is not None:
            row["baseline"] = f"{backend}: {baseline}"
            row["ratio"], row["ratio_spread_pct"] = paired_ratio(batches, samples[baseline])
        rows.append(row)
    return rows


def _drop(db: Database) -> None:
    with db.engine.begin() as connection:
        _metadata.drop_all(connection)


def _variants(db: Database) -> dict[str, Operation]:
    def plain_empty() -> None:
        with db.session_factory() as session, session.begin():
            pass

    def nothing() -> None:
        pass

    def runner_empty() -> None:
        db.run_transaction(nothing)

    def plain_update() -> None:
        with db.session_factory() as session, session.begin():
            session.execute(_BUMP)

    immediate = db.engine.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})

    def immediate_update() -> None:
        with db.session_factory(bind=immediate) as session, session.begin():
            session.execute(_BUMP)

    @db.transactional
    def decorated_update(session: Session) -> None:
        session.execute(_BUMP)

    def block_update() -> None:
        with db.transaction() as session:
            session.execute(_BUMP)

    return {
        PLAIN_EMPTY: plain_empty,
        RUNNER_EMPTY: runner_empty,
        PLAIN_UPDATE: plain_update,
        IMMEDIATE_UPDATE: immediate_update,
        DECORATED_UPDATE: decorated_update,
        BLOCK_UPDATE: block_update,
    }
