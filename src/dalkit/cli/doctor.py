"""``dalkit doctor``: can the database (and Redis) be reached, and how is the pool set up and doing.

Exit code 0 when every check passed, 1 when one failed, 2 when the configuration is unusable
(no URL, a malformed one, an unknown ``DALKIT_DATABASE_*`` variable). It creates nothing: a
SQLite file that does not exist is reported, not made.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from time import perf_counter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dalkit.cli._render import cell, health_rows, status
from dalkit.config import URL_ENV as DATABASE_URL_ENV
from dalkit.config import DatabaseConfig
from dalkit.database import Database
from dalkit.engine.health import HealthCheckResult
from dalkit.engine.options import existing_database_only
from dalkit.errors import ConfigurationError, ConnectionFailedError
from dalkit.redis.config import URL_ENV as REDIS_URL_ENV

#: a flag takes no value: without it, Typer's help shows ``--json <bool>``
FLAG_METAVAR = ""


def doctor(
    url: Annotated[
        str | None,
        typer.Option(
            envvar=DATABASE_URL_ENV,
            help="Database URL (required); one with a password is better given in the environment.",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(envvar=REDIS_URL_ENV, help="Also check this Redis server."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", metavar=FLAG_METAVAR, help="Print a JSON document instead of a table."
        ),
    ] = False,
) -> None:
    """Check the database (and Redis): health, server version, pool settings and statistics."""
    try:
        report = collect_report(url, redis_url, os.environ)
    except ConfigurationError as exc:
        typer.echo(f"dalkit doctor: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        Console().print(render_report(report))
    raise typer.Exit(0 if report.ok else 1)


@dataclasses.dataclass(frozen=True)
class DoctorReport:
    """What the doctor found; every URL in it is masked. ``pool`` and ``pool_stats`` are None
    when the database could not be reached: they would describe a pool that never worked."""

    database: HealthCheckResult
    pool: dict[str, Any] | None
    pool_stats: dict[str, int | float] | None
    redis: HealthCheckResult | None = None
    redis_pool: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        return self.database.ok and (self.redis is None or self.redis.ok)

    def as_dict(self) -> dict[str, Any]:
        redis = None
        if self.redis is not None:
            redis = {**self.redis.as_dict(), "pool": self.redis_pool}
        database = {**self.database.as_dict(), "pool": self.pool, "pool_stats": self.pool_stats}
        return {"ok": self.ok, "database": database, "redis": redis}


def collect_report(
    url: str | None, redis_url: str | None, environ: Mapping[str, str]
) -> DoctorReport:
    """Check the database and, given a URL, Redis; ``Database.from_env`` semantics for the URL."""
    # --url replaces only the URL: pool options still come from DALKIT_DATABASE_<OPTION>
    env = {**environ, DATABASE_URL_ENV: url} if url else environ
    report = _check_database(DatabaseConfig.from_env(env))
    redis_url = redis_url or environ.get(REDIS_URL_ENV)
    if redis_url:
        # imported here: the redis extra is needed only when a Redis URL is given
        from dalkit.redis.manager import RedisManager

        with RedisManager(redis_url) as manager:
            report = dataclasses.replace(
                report, redis=manager.health_check(), redis_pool=manager.pool_status()
            )
    return report


def _check_database(config: DatabaseConfig) -> DoctorReport:
    started = perf_counter()
    try:
        opened = existing_database_only(config)
    except ConnectionFailedError as exc:
        return DoctorReport(HealthCheckResult.failed(config, exc, started), None, None)
    with Database(opened) as db:
        # the report names the database as given, not as opened (a mode=rw SQLite URI)
        health = dataclasses.replace(
            db.health_check(), url=config.safe_url, database=config.url.database
        )
        if not health.ok:
            return DoctorReport(health, None, None)
        return DoctorReport(health, _pool_settings(db), db.pool_stats())


def _pool_settings(db: Database) -> dict[str, Any]:
    config = db.config
    return {
        "pool_class": type(db.engine.pool).__name__,
        "pool_size": config.pool_size,
        "max_overflow": config.max_overflow,
        "pool_timeout": config.pool_timeout,
        "pool_recycle": config.pool_recycle,
        "pool_pre_ping": config.pool_pre_ping,
        "connect_timeout_s": config.connect_timeout_s,
        "statement_timeout_ms": config.statement_timeout_ms,
        "leak_threshold_s": config.leak_threshold_s,
        "min_size": config.min_size,
        "max_queries": config.max_queries,
        "max_idle_s": config.max_idle_s,
        "pool_log_interval_s": config.pool_log_interval_s,
    }


def render_report(report: DoctorReport) -> Table:
    table = Table(title="dalkit doctor", title_justify="left", caption_justify="left")
    table.add_column("area", style="bold")
    table.add_column("check", style="cyan")
    table.add_column("value", overflow="fold")
    _add_rows(table, "database", health_rows(report.database))
    if report.pool is not None:
        table.add_section()
        _add_rows(table, "pool", [(k, cell(v)) for k, v in report.pool.items()])
    if report.pool_stats is not None:
        table.add_section()
        _add_rows(table, "pool stats", [(k, cell(v)) for k, v in report.pool_stats.items()])
    if report.redis is not None:
        table.add_section()
        pool = report.redis_pool or {}
        rows = health_rows(report.redis) + [(f"pool {k}", cell(v)) for k, v in pool.items()]
        _add_rows(table, "redis", rows)
    verdict = ": every check passed" if report.ok else ": at least one check failed"
    table.caption = status(report.ok).append(verdict)
    return table


def _add_rows(table: Table, area: str, rows: list[tuple[str, Text]]) -> None:
    for number, (check, value) in enumerate(rows):
        table.add_row(area if number == 0 else "", check, value)
