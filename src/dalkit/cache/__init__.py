"""The query cache (memory and Redis backends, invalidated on commit by every write path).

``Database(url, cache=QueryCache(backend=MemoryBackend()))`` (or ``install(db, cache)``);
repositories opt in with ``cache_ttl = 60``. The guarantee and the scheme behind it are in
[`dalkit.cache.versions`][].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dalkit.cache.backends import AsyncRedisBackend, MemoryBackend, RedisBackend
from dalkit.cache.capture import note_write
from dalkit.cache.errors import (
    CacheConfigurationError,
    CacheError,
    UncacheableCallError,
    UncacheableStatementError,
)
from dalkit.cache.install import install
from dalkit.cache.query_cache import QueryCache
from dalkit.engine.statement_hooks import WRITES_OPTION

if TYPE_CHECKING:
    from dalkit.cache.async_cache import AsyncQueryCache


def __getattr__(name: str) -> Any:
    # the async cache needs greenlet, which only the async extras bring: loaded on first use
    if name == "AsyncQueryCache":
        from dalkit.cache.async_cache import AsyncQueryCache

        return AsyncQueryCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncQueryCache",
    "AsyncRedisBackend",
    "CacheConfigurationError",
    "CacheError",
    "MemoryBackend",
    "QueryCache",
    "RedisBackend",
    "UncacheableCallError",
    "UncacheableStatementError",
    "WRITES_OPTION",
    "install",
    "note_write",
]
