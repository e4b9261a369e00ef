"""From a RedisConfig to a redis-py pool and client, and what the managers read back without I/O.

redis-py is imported only when a pool is built, so that importing dalkit never needs the extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any

from dalkit.engine.health import HealthCheckResult
from dalkit.errors import ConfigurationError
from dalkit.redis.config import RedisConfig, require_redis
from dalkit.redis.loops import Once, PerLoop

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = [
    "AsyncClients",
    "Clients",
    "build_async_client",
    "build_client",
    "health_failed",
    "health_passed",
    "pool_status",
]


def build_client(config: RedisConfig) -> tuple[redis.ConnectionPool, redis.Redis]:
    """A pool for ``config`` and a client sharing it; no connection is opened yet."""
    require_redis()
    import redis

    pool = _from_url(redis.ConnectionPool, config)
    return pool, redis.Redis(connection_pool=pool)


def build_async_client(
    config: RedisConfig,
) -> tuple[redis.asyncio.ConnectionPool, redis.asyncio.Redis]:
    """The asyncio twin of `build_client()`."""
    require_redis()
    import redis.asyncio

    pool = _from_url(redis.asyncio.ConnectionPool, config)
    return pool, redis.asyncio.Redis(connection_pool=pool)


class Clients(Once[tuple["redis.ConnectionPool", "redis.Redis"]]):
    """A sync pool and its client: the same for the manager's whole life.

    Args:
        config: The Redis configuration.
    """

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(partial(build_client, config), _disconnect)


class AsyncClients(PerLoop[tuple["redis.asyncio.ConnectionPool", "redis.asyncio.Redis"]]):
    """An asyncio pool and its client, for the running event loop (`PerLoop`): redis-py's
    asyncio connections belong to the loop that opened them, so each loop gets a pair of its
    own and disconnects its pool as it shuts down.

    Args:
        config: The Redis configuration.
    """

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(partial(build_async_client, config), _disconnect)


def _disconnect(pair: tuple[Any, Any]) -> Any:
    return pair[0].disconnect()


def _from_url(pool_class: Any, config: RedisConfig) -> Any:
    try:
        return pool_class.from_url(config.url, **config.pool_kwargs())
    except ValueError as exc:
        # redis-py names the query option it could not read, never the whole URL
        raise ConfigurationError(config.scrub(f"invalid Redis URL: {exc}")) from None


def pool_status(pool: Any) -> dict[str, int]:
    """Connections a redis-py pool (sync or asyncio) has open, idle and lent out, and its limit."""
    available, in_use = (count for count, _attributes in pool.get_connection_count())
    return {
        "created": available + in_use,
        "available": available,
        "in_use": in_use,
        "max_connections": pool.max_connections,
    }


def health_passed(
    config: RedisConfig, info: Mapping[str, Any], started: float
) -> HealthCheckResult:
    """The result of a health check whose ``INFO server`` (or ``PING``) was answered."""
    version = info.get("redis_version")
    return HealthCheckResult(
        ok=True,
        latency_ms=_since(started),
        server_version=str(version) if version is not None else None,
        database=config.database,
        backend="redis",
        url=config.safe_url,
    )


def health_failed(config: RedisConfig, error: BaseException, started: float) -> HealthCheckResult:
    """The result of a health check that raised ``error``; the message is scrubbed."""
    text = str(error).strip()
    message = text.splitlines()[0] if text else type(error).__name__
    return HealthCheckResult(
        ok=False,
        latency_ms=_since(started),
        server_version=None,
        database=config.database,
        backend="redis",
        url=config.safe_url,
        error=config.scrub(f"{type(error).__name__}: {message}"),
    )


def _since(started: float) -> float:
    return round((perf_counter() - started) * 1000.0, 3)
