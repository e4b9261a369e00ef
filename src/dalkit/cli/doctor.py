"""``dalkit doctor``: can the database (its replicas, and Redis) be reached, and how is the pool
set up and doing.

Exit code 0 when every check passed, 1 when one failed (a replica that is down, lagging or not
in recovery counts), 2 when the configuration is unusable (no URL, a malformed one, an unknown
``DALKIT_DATABASE_*`` variable). It creates nothing: a SQLite file that does not exist is
reported, not made. Replicas come from ``--replica URL`` (repeatable) or ``DALKIT_REPLICA_URLS``
(comma-separated); each is named ``host:port``, never by its URL. Their weights, as the app's
``replica_weights=``, come from ``--replica-weight`` or ``DALKIT_REPLICA_WEIGHTS``: a replica
weighted 0 is drained on purpose, reported as drained and failing no check.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Engine

from dalkit.cli._render import FLAG_METAVAR, cell, health_rows, status
from dalkit.config import URL_ENV as DATABASE_URL_ENV
from dalkit.config import DatabaseConfig
from dalkit.database import Database
from dalkit.engine.health import HealthCheckResult
from dalkit.engine.options import existing_database_only
from dalkit.engine.replica_setup import replica_router
from dalkit.errors import ConfigurationError, ConnectionFailedError
from dalkit.redis.config import URL_ENV as REDIS_URL_ENV

#: comma-separated replica URLs, when no ``--replica`` is given
REPLICA_URLS_ENV = "DALKIT_REPLICA_URLS"
#: comma-separated weights, one per replica, when no ``--replica-weight`` is given
REPLICA_WEIGHTS_ENV = "DALKIT_REPLICA_WEIGHTS"
#: a replica further behind than this fails the check (the default of ``max_replica_lag_s``)
MAX_REPLICA_LAG_S = 5.0
# the replica's own view of its lag: 0 when it has replayed all it received, else the age of
# the last transaction it replayed (pg_last_xact_replay_timestamp); None on a primary
_REPLICA_LAG = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL "
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END"
)


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
    replica: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Also check this read replica (repeatable; default: {REPLICA_URLS_ENV}, "
            "comma-separated)."
        ),
    ] = None,
    replica_weight: Annotated[
        list[int] | None,
        typer.Option(
            min=0,
            help=f"The weight of each --replica, in order, as the app's replica_weights= "
            f"(default: {REPLICA_WEIGHTS_ENV}, comma-separated; 1 each); 0 is drained.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", metavar=FLAG_METAVAR, help="Print a JSON document instead of a table."
        ),
    ] = False,
) -> None:
    """Check the database (its replicas, and Redis): health, server version, pool settings and \
statistics, and each replica's state and lag."""
    try:
        report = collect_report(url, redis_url, os.environ, replica or (), replica_weight)
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
    #: one entry per replica: name (host:port), state, probed, weight, lag_s, reads, errors,
    #: error; state is "drained" for weight 0, whatever its probe (probed) found
    replicas: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        replicas_ok = all(r["state"] in ("healthy", "drained") for r in self.replicas)
        return self.database.ok and replicas_ok and (self.redis is None or self.redis.ok)

    def as_dict(self) -> dict[str, Any]:
        redis = None
        if self.redis is not None:
            redis = {**self.redis.as_dict(), "pool": self.redis_pool}
        database = {**self.database.as_dict(), "pool": self.pool, "pool_stats": self.pool_stats}
        return {"ok": self.ok, "database": database, "replicas": self.replicas, "redis": redis}


def collect_report(
    url: str | None,
    redis_url: str | None,
    environ: Mapping[str, str],
    replicas: Sequence[str] = (),
    weights: Sequence[int] | None = None,
) -> DoctorReport:
    """Check the database, its replicas and, given a URL, Redis.

    Args:
        url: The database URL; None reads ``DALKIT_DATABASE_URL`` (``Database.from_env``).
        redis_url: A Redis server to check too; None reads ``DALKIT_REDIS_URL``.
        environ: The environment to read those variables from.
        replicas: Replica URLs; empty reads ``DALKIT_REPLICA_URLS`` (comma-separated).
        weights: One weight per replica (0: drained); None reads ``DALKIT_REPLICA_WEIGHTS``
            (comma-separated), and without it each replica weighs 1.

    Returns:
        What was found, every URL masked and every replica named ``host:port``.

    Raises:
        ConfigurationError: The configuration is unusable (no URL, a malformed one, replicas
            of a database that is not PostgreSQL, weights that are not one integer >= 0 per
            replica).
    """
    # --url replaces only the URL: pool options still come from DALKIT_DATABASE_<OPTION>
    env = {**environ, DATABASE_URL_ENV: url} if url else environ
    if not replicas:
        replicas = [u.strip() for u in environ.get(REPLICA_URLS_ENV, "").split(",") if u.strip()]
    report = _check_database(
        DatabaseConfig.from_env(env), replicas, _weights(weights, environ, len(replicas))
    )
    redis_url = redis_url or environ.get(REDIS_URL_ENV)
    if redis_url:
        # imported here: the redis extra is needed only when a Redis URL is given
        from dalkit.redis.manager import RedisManager

        with RedisManager(redis_url) as manager:
            report = dataclasses.replace(
                report, redis=manager.health_check(), redis_pool=manager.pool_status()
            )
    return report


def _weights(
    given: Sequence[int] | None, environ: Mapping[str, str], replicas: int
) -> list[int] | None:
    if given:
        weights = list(given)
    else:
        raw = [w.strip() for w in environ.get(REPLICA_WEIGHTS_ENV, "").split(",") if w.strip()]
        if not all(w.isascii() and w.isdigit() for w in raw):  # no sign: no negative weight
            raise ConfigurationError(f"{REPLICA_WEIGHTS_ENV} takes integers >= 0, comma-separated")
        if not raw:
            return None
        weights = [int(w) for w in raw]
    if len(weights) != replicas:
        # replica_router's own message names replica_weights=, an option the doctor does not have
        raise ConfigurationError(
            f"{len(weights)} replica weight(s) for {replicas} replica(s): give one per replica "
            f"(--replica-weight or {REPLICA_WEIGHTS_ENV})"
        )
    return weights


def _check_database(
    config: DatabaseConfig, replicas: Sequence[str], weights: list[int] | None
) -> DoctorReport:
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
            return DoctorReport(health, None, None, replicas=_check_replicas(db, replicas, weights))
        return DoctorReport(
            health,
            _pool_settings(db),
            db.pool_stats(),
            replicas=_check_replicas(db, replicas, weights),
        )


def _check_replicas(
    db: Database, urls: Sequence[str], weights: list[int] | None
) -> list[dict[str, Any]]:
    """Probe each replica as the replica monitor does, with its own view of its lag; a drained
    one (weight 0) is probed too, so that its report says whether it could come back."""
    router = replica_router(
        db,
        db.engine,
        db.config,
        list(urls),
        weights,
        max_lag_s=MAX_REPLICA_LAG_S,
        interval_s=1.0,
        pgbouncer=False,
    )
    if router is None:
        return []
    try:
        router.check()
        rows = []
        for replica in router.replicas.replicas:
            lag = _replica_lag(replica.engine) if replica.state == "healthy" else None
            state = replica.state
            if state == "healthy" and lag is None:
                state = "not in recovery"  # a primary, or a promoted replica
            elif lag is not None and lag > MAX_REPLICA_LAG_S:
                state = "lagging"
            rows.append(
                {
                    "name": replica.name,
                    # taken out of the reads on purpose: neither healthy nor a failure
                    "state": "drained" if replica.weight == 0 else state,
                    "probed": state,
                    "weight": replica.weight,
                    "lag_s": lag,
                    "reads": replica.reads,
                    "errors": replica.errors,
                    "error": replica.error,
                }
            )
        return rows
    finally:
        router.close()


def _replica_lag(engine: Engine) -> float | None:
    try:
        with engine.connect() as connection:
            lag = connection.exec_driver_sql(_REPLICA_LAG).scalar_one()
    except Exception:  # down since the probe: the probe's state stands
        return None
    return None if lag is None else max(0.0, float(lag))


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
    if report.replicas:
        table.add_section()
        _add_rows(table, "replicas", [(r["name"], _replica_cell(r)) for r in report.replicas])
    if report.redis is not None:
        table.add_section()
        pool = report.redis_pool or {}
        rows = health_rows(report.redis) + [(f"pool {k}", cell(v)) for k, v in pool.items()]
        _add_rows(table, "redis", rows)
    verdict = ": every check passed" if report.ok else ": at least one check failed"
    table.caption = status(report.ok).append(verdict)
    return table


def _replica_cell(replica: Mapping[str, Any]) -> Text:
    lag = "-" if replica["lag_s"] is None else f"{replica['lag_s']:.3f} s"
    if replica["state"] == "drained":
        text = Text("drained", style="bold yellow").append(
            f" (weight 0, no reads), probe: {replica['probed']}"
        )
    else:
        text = status(replica["state"] == "healthy").append(f" {replica['state']}")
    text.append(f", lag {lag}, {replica['reads']} reads routed, {replica['errors']} errors")
    if replica["error"]:
        text.append(f" ({replica['error']})", style="red")
    return text


def _add_rows(table: Table, area: str, rows: list[tuple[str, Text]]) -> None:
    for number, (check, value) in enumerate(rows):
        table.add_row(area if number == 0 else "", check, value)
