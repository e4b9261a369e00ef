"""Pool checkout + ``SELECT 1`` + checkin: dalkit's Database against a plain SQLAlchemy engine.

Every SQLAlchemy variant has dalkit's default pool settings (QueuePool, pool_size 5,
max_overflow 10, pre-ping on), so each checkout costs the same round trips. "sqlalchemy + dalkit
pool metrics" is the plain engine with only dalkit's pool instrumentation added: its ratio is the
instrumentation's cost. The dalkit Database rows add everything else dalkit installs (on SQLite:
the BEGIN it emits so that transactions really are transactions). The raw drivers, one
persistent connection each, are the floor.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import QueuePool

from bench.timing import Operation, interleaved_samples, median_and_spread, paired_ratio
from dalkit import Database
from dalkit.engine.build import resolve_url
from dalkit.engine.pool import PoolMetrics, install, instrumented_pool_class

SELECT_ONE = "SELECT 1"

PLAIN_CONNECT = "sqlalchemy engine.connect()"
METRICS_CONNECT = "sqlalchemy + dalkit pool metrics, engine.connect()"
DALKIT_CONNECT = "dalkit Database, db.engine.connect()"
PLAIN_BEGIN = "sqlalchemy engine.begin()"
DALKIT_CONNECTION = "dalkit Database, db.connection()"
# variant -> the variant it is compared against
BASELINES: dict[str, str | None] = {
    PLAIN_CONNECT: None,
    METRICS_CONNECT: PLAIN_CONNECT,
    DALKIT_CONNECT: PLAIN_CONNECT,
    PLAIN_BEGIN: None,
    DALKIT_CONNECTION: PLAIN_BEGIN,
}


#: What dalkit's pool instrumentation may cost against the plain engine.
TARGET_PCT = 5.0


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    rows = _measure("postgresql", pg_url, _psycopg_variants)
    rows += _measure("sqlite", sqlite_url, _sqlite3_variants)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    """The instrumentation's cost per backend, against the target."""
    by_name = {row["name"]: row for row in rows}
    lines = []
    for backend in ("postgresql", "sqlite"):
        metered = by_name[f"{backend}: {METRICS_CONNECT}"]
        plain_ops = by_name[f"{backend}: {PLAIN_CONNECT}"]["ops_per_s"]
        cost_pct = 100.0 * (1.0 / metered["ratio"] - 1.0)
        extra_us = 1e6 * (1.0 / (plain_ops * metered["ratio"]) - 1.0 / plain_ops)
        verdict = "within" if cost_pct <= TARGET_PCT else "over"
        lines.append(
            f"- {backend}: dalkit's pool instrumentation adds {cost_pct:+.1f}% time per "
            f"checkout + SELECT 1 ({extra_us:+.1f} µs; paired-ratio spread "
            f"{metered['ratio_spread_pct']:.1f}%): {verdict} the {TARGET_PCT:.0f}% target"
        )
    return "\n".join(lines)


DriverVariants = Callable[[str, ExitStack], dict[str, Operation]]


def _measure(backend: str, url: str, driver_variants: DriverVariants) -> list[dict[str, Any]]:
    with ExitStack() as cleanup:
        variants = _sqlalchemy_variants(url, cleanup)
        raw = driver_variants(url, cleanup)
        samples = interleaved_samples({**variants, **raw})
    baselines = {**BASELINES, **dict.fromkeys(raw, PLAIN_CONNECT)}
    rows = []
    for name, batches in samples.items():
        ops, spread = median_and_spread(batches)
        row = {"name": f"{backend}: {name}", "ops_per_s": ops, "baseline": None}
        row["spread_pct"] = spread
        baseline = baselines[name]
        if baseline is not None:
            row["baseline"] = f"{backend}: {baseline}"
            row["ratio"], row["ratio_spread_pct"] = paired_ratio(batches, samples[baseline])
        rows.append(row)
    return rows


def _sqlalchemy_variants(url: str, cleanup: ExitStack) -> dict[str, Operation]:
    db = cleanup.enter_context(Database(url))
    pool_settings = {
        "pool_size": db.config.pool_size,
        "max_overflow": db.config.max_overflow,
        "pool_timeout": db.config.pool_timeout,
        "pool_recycle": db.config.pool_recycle,
        "pool_pre_ping": db.config.pool_pre_ping,
    }
    driver_url = resolve_url(db.config, is_async=False)
    plain = create_engine(driver_url, poolclass=QueuePool, **pool_settings)
    cleanup.callback(plain.dispose)
    instrumented = create_engine(
        driver_url, poolclass=instrumented_pool_class(is_async=False), **pool_settings
    )
    install(instrumented, PoolMetrics())
    cleanup.callback(instrumented.dispose)

    def connection() -> None:
        with db.connection() as conn:
            conn.exec_driver_sql(SELECT_ONE).scalar()

    return {
        PLAIN_CONNECT: _connect(plain),
        METRICS_CONNECT: _connect(instrumented),
        DALKIT_CONNECT: _connect(db.engine),
        PLAIN_BEGIN: _begin(plain),
        DALKIT_CONNECTION: connection,
    }


def _connect(engine: Engine) -> Operation:
    def operation() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(SELECT_ONE).scalar()

    return operation


def _begin(engine: Engine) -> Operation:
    def operation() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(SELECT_ONE).scalar()

    return operation


def _psycopg_variants(url: str, cleanup: ExitStack) -> dict[str, Operation]:
    conn = cleanup.enter_context(psycopg.connect(url, autocommit=True))

    def persistent() -> None:
        conn.execute(SELECT_ONE).fetchone()

    variants: dict[str, Operation] = {"psycopg, one persistent connection": persistent}
    if importlib.util.find_spec("psycopg_pool") is not None:
        variants["psycopg_pool, connection() with check"] = cleanup.enter_context(
            _psycopg_pool_variant(url)
        )
    return variants


@contextmanager
def _psycopg_pool_variant(url: str) -> Iterator[Operation]:
    from psycopg_pool import ConnectionPool

    # the same sizes and a check on every checkout, like the engines' pre-ping
    with ConnectionPool(
        url, min_size=5, max_size=15, open=True, check=ConnectionPool.check_connection
    ) as pool:

        def operation() -> None:
            with pool.connection() as conn:
                conn.execute(SELECT_ONE).fetchone()

        yield operation


def _sqlite3_variants(url: str, cleanup: ExitStack) -> dict[str, Operation]:
    conn = sqlite3.connect(str(make_url(url).database))
    cleanup.callback(conn.close)

    def persistent() -> None:
        conn.execute(SELECT_ONE).fetchone()

    return {"sqlite3, one persistent connection": persistent}
