"""Building the replica router of a database from its arguments: the checks (typed errors), each
replica's configuration (the primary's options, its own host) and its safe name (host:port).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

from sqlalchemy.engine import URL, Engine

from dalkit.config import DatabaseConfig, parse_url
from dalkit.engine.build import build_async_engine, build_engine
from dalkit.engine.pgbouncer import pgbouncer_config
from dalkit.engine.reroute import failure_hook
from dalkit.engine.routing import ReplicaRouter
from dalkit.engine.routing_async import AsyncReplicaRouter
from dalkit.errors import ConfigurationError

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet, which only the async extras bring
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ROUTE_READS", "RouteReads", "failure_hook", "replica_names", "replica_router"]

#: the values of ``route_reads=``: "auto" routes the plain reads of default transactions too
#: (engine/autoroute.py), "read_only" only read-only transactions
RouteReads = Literal["auto", "read_only"]
ROUTE_READS: tuple[RouteReads, ...] = ("auto", "read_only")


@overload
def replica_router(
    owner: object,
    primary: AsyncEngine,
    config: DatabaseConfig,
    urls: Sequence[str | URL],
    weights: Sequence[int] | None,
    *,
    max_lag_s: float,
    interval_s: float,
    pgbouncer: bool,
    route_reads: str = "auto",
) -> AsyncReplicaRouter | None: ...


@overload
def replica_router(
    owner: object,
    primary: Engine,
    config: DatabaseConfig,
    urls: Sequence[str | URL],
    weights: Sequence[int] | None,
    *,
    max_lag_s: float,
    interval_s: float,
    pgbouncer: bool,
    route_reads: str = "auto",
) -> ReplicaRouter | None: ...


def replica_router(
    owner: object,
    primary: Engine | AsyncEngine,
    config: DatabaseConfig,
    urls: Sequence[str | URL],
    weights: Sequence[int] | None,
    *,
    max_lag_s: float,
    interval_s: float,
    pgbouncer: bool,
    route_reads: str = "auto",
) -> ReplicaRouter | AsyncReplicaRouter | None:
    """The router of a database with ``urls`` as replicas: each replica gets the primary's
    options, so the same pool sizes, timeouts and drivers.

    Args:
        owner: The transaction runner whose scopes the router tracks.
        primary: The primary's engine (sync or async: the router is of the same kind).
        config: The primary's configuration.
        urls: The replicas' URLs.
        weights: Each replica's share of the reads; None for equal shares.
        max_lag_s: A replica further behind than this is ejected until it catches up.
        interval_s: How often the monitor probes the replicas.
        pgbouncer: Whether the replicas are reached through PgBouncer's transaction pooling.
        route_reads: ``"auto"`` (the plain reads of default transactions too) or
            ``"read_only"``.

    Returns:
        The router, or None without replicas.

    Raises:
        ConfigurationError: A single URL instead of a list, a malformed URL, weights that do
            not match the URLs, a primary or a replica that is not PostgreSQL, or
            ``route_reads`` other than "auto" or "read_only".
    """
    if route_reads not in ROUTE_READS:
        raise ConfigurationError(f"route_reads= takes 'auto' or 'read_only', not {route_reads!r}")
    if isinstance(urls, str | URL):
        raise ConfigurationError("replicas= takes a list of URLs")
    if not urls:
        if weights:
            raise ConfigurationError("replica_weights= without replicas=")
        return None
    if config.backend != "postgresql":
        raise ConfigurationError("read replicas need PostgreSQL (streaming replication)")
    weights = list(weights) if weights is not None else [1] * len(urls)
    if len(weights) != len(urls):
        raise ConfigurationError("replica_weights= needs one weight per replica URL")
    drivername = config.url.drivername
    is_async = hasattr(primary, "sync_engine")
    configs: list[DatabaseConfig] = []
    for url in urls:
        # parsed as the primary's is: a malformed URL is a ConfigurationError, h1,h2 fails over
        parsed = parse_url(url)
        backend = parsed.get_backend_name()
        if backend != config.backend:
            # its driver would be replaced by the primary's: sqlite:///r.db became localhost
            raise ConfigurationError(
                f"replica URL #{len(configs) + 1} is a {backend!r} database: replicas must be "
                f"{config.backend} URLs, as the primary is"
            )
        replica = DatabaseConfig.coerce(config, url=parsed.set(drivername=drivername))
        # a URL naming no driver is asyncpg's for an AsyncDatabase: its arguments, not psycopg's
        configs.append(pgbouncer_config(replica, is_async=is_async) if pgbouncer else replica)
    names = replica_names(configs)
    # behind PgBouncer, asyncpg's statements run apart from their prepare step: only inside a
    # transaction block does PgBouncer keep both on one server connection
    autocommit_reads = not (pgbouncer and primary.dialect.driver == "asyncpg")
    if is_async:
        engines = [build_async_engine(c)[0] for c in configs]
        return AsyncReplicaRouter(
            owner,
            primary,
            list(zip(names, engines, weights, strict=True)),
            max_lag_s=max_lag_s,
            interval_s=interval_s,
            autocommit_reads=autocommit_reads,
            route_reads=route_reads,
        )
    sync_engines = [build_engine(c)[0] for c in configs]
    return ReplicaRouter(
        owner,
        primary,
        list(zip(names, sync_engines, weights, strict=True)),
        max_lag_s=max_lag_s,
        interval_s=interval_s,
        route_reads=route_reads,
    )


def replica_names(configs: Sequence[DatabaseConfig]) -> list[str]:
    """The safe name of each replica: ``host:port``, never its URL (it carries the password).

    Args:
        configs: The replicas' configurations.

    Returns:
        One name per replica, numbered (``host:port#1``) when two would be alike.
    """
    names = [_hosts(c.url) for c in configs]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _hosts(url: URL) -> str:
    # a multi-host URL names its hosts in the query (?host=h1:5432&host=h2:5432)
    listed = url.query.get("host") if url.host is None else None
    if listed:
        hosts = [listed] if isinstance(listed, str) else list(listed)
        return ",".join(h if ":" in h else f"{h}:{url.port or 5432}" for h in hosts)
    return f"{url.host or 'localhost'}:{url.port or 5432}"
