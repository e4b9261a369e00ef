"""RedisBackend and AsyncRedisBackend: entries and table tokens in a Redis server shared by
every process, through dalkit's RedisManager / AsyncRedisManager (redis-py).

A read is one round trip (the entry and its tables' tokens in one pipeline); a commit's
invalidation is one ``MSET`` of fresh tokens. Nothing ever scans the keyspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.versions import Tokens, decode_entry, encode_entry, new_token

if TYPE_CHECKING:
    from dalkit.redis.manager import RedisManager
    from dalkit.redis.manager_async import AsyncRedisManager

__all__ = ["AsyncRedisBackend", "RedisBackend"]

DEFAULT_PREFIX = "dalkit:cache"


class _Keys:
    """Key naming and the decisions that need no I/O, shared by both clients."""

    shared = True

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def token_keys(self, tables: Sequence[str]) -> list[str]:
        return [f"{self.prefix}:v:{table}" for table in tables]

    @staticmethod
    def decide(raw: bytes | None, tokens: Tokens) -> bytes | None:
        if raw is None:
            return None
        stored, payload = decode_entry(raw)
        return payload if stored == tokens else None

    @staticmethod
    def tokens(values: Sequence[Any]) -> Tokens:
        return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


class RedisBackend(_Keys):
    """Entries in Redis for a sync :class:`~dalkit.Database`:
    ``RedisBackend(RedisManager(url))``."""

    def __init__(self, manager: RedisManager, *, prefix: str = DEFAULT_PREFIX) -> None:
        if getattr(manager, "client", None) is None or _is_async(manager.client):
            raise CacheConfigurationError(
                "RedisBackend needs a dalkit.RedisManager; with an AsyncRedisManager use "
                "AsyncRedisBackend (and AsyncQueryCache)"
            )
        super().__init__(prefix)
        self.manager = manager
        self._client = _fast_failing_client(manager, asyncio=False)

    def close(self) -> None:
        """Close the backend's connections (its pool is its own: see _fast_failing_client)."""
        self._client.connection_pool.disconnect()

    def fetch(self, key: str, tables: Sequence[str]) -> tuple[bytes | None, Tokens]:
        names = self.token_keys(tables)
        pipe = self._client.pipeline(transaction=False)
        pipe.get(key)
        pipe.mget(names)
        raw, values = pipe.execute()
        if None in values:
            pipe = self._client.pipeline(transaction=False)
            for name, value in zip(names, values, strict=True):
                if value is None:
                    pipe.set(name, new_token(), nx=True)
            pipe.mget(names)
            values = pipe.execute()[-1]
            return None, self.tokens(values)  # an entry can never carry a token just made
        tokens = self.tokens(values)
        return self.decide(raw, tokens), tokens

    def store(self, key: str, tokens: Tokens, payload: bytes, ttl: float) -> None:
        self._client.set(key, encode_entry(tokens, payload), px=max(1, int(ttl * 1000)))

    def bump(self, tables: Sequence[str]) -> None:
        self._client.mset({name: new_token() for name in self.token_keys(tables)})

    def __repr__(self) -> str:
        return f"RedisBackend({self.manager.url!r}, prefix={self.prefix!r})"


class AsyncRedisBackend(_Keys):
    """The asyncio twin of :class:`RedisBackend`, for an :class:`~dalkit.AsyncDatabase`."""

    def __init__(self, manager: AsyncRedisManager, *, prefix: str = DEFAULT_PREFIX) -> None:
        if getattr(manager, "client", None) is None or not _is_async(manager.client):
            raise CacheConfigurationError(
                "AsyncRedisBackend needs a dalkit.AsyncRedisManager; with a RedisManager use "
                "RedisBackend (and QueryCache)"
            )
        super().__init__(prefix)
        self.manager = manager
        self._client = _fast_failing_client(manager, asyncio=True)

    async def close(self) -> None:
        await self._client.connection_pool.disconnect()

    async def fetch_async(self, key: str, tables: Sequence[str]) -> tuple[bytes | None, Tokens]:
        names = self.token_keys(tables)
        pipe = self._client.pipeline(transaction=False)
        pipe.get(key)
        pipe.mget(names)
        raw, values = await pipe.execute()
        if None in values:
            pipe = self._client.pipeline(transaction=False)
            for name, value in zip(names, values, strict=True):
                if value is None:
                    pipe.set(name, new_token(), nx=True)
            pipe.mget(names)
            values = (await pipe.execute())[-1]
            return None, self.tokens(values)
        tokens = self.tokens(values)
        return self.decide(raw, tokens), tokens

    async def store_async(self, key: str, tokens: Tokens, payload: bytes, ttl: float) -> None:
        await self._client.set(key, encode_entry(tokens, payload), px=max(1, int(ttl * 1000)))

    async def bump_async(self, tables: Sequence[str]) -> None:
        await self._client.mset({name: new_token() for name in self.token_keys(tables)})

    def __repr__(self) -> str:
        return f"AsyncRedisBackend({self.manager.url!r}, prefix={self.prefix!r})"


def _fast_failing_client(manager: Any, *, asyncio: bool) -> Any:
    """A client on a pool of its own, configured like ``manager``'s but retrying a failed
    command once and at once: redis-py's default backoff would make every cache call wait
    seconds while Redis is down, where bypassing the cache costs nothing."""
    from redis.backoff import NoBackoff

    client_module: Any
    retry: Any
    if asyncio:
        import redis.asyncio
        from redis.asyncio.retry import Retry as AsyncRetry

        client_module, retry = redis.asyncio, AsyncRetry(NoBackoff(), 1)
    else:
        import redis
        from redis.retry import Retry

        client_module, retry = redis, Retry(NoBackoff(), 1)
    config = manager.config
    kwargs = {**config.pool_kwargs(), "retry": retry}
    pool = client_module.ConnectionPool.from_url(config.url, **kwargs)
    return client_module.Redis(connection_pool=pool)


def _is_async(client: Any) -> bool:
    import redis.asyncio

    return isinstance(client, redis.asyncio.Redis)
