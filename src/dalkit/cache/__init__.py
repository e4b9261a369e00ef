"""The query cache (memory and Redis backends, invalidated on commit by every write path).

``Database(url, cache=QueryCache(backend=MemoryBackend()))`` (or ``install(db, cache)``);
repositories opt in with ``cache_ttl = 60``. The guarantee and the scheme behind it are in
:mod:`dalkit.cache.versions`.
"""

from __future__ import annotations

from dalkit.cache.async_cache import AsyncQueryCache
from dalkit.cache.backends import AsyncRedisBackend, MemoryBackend, RedisBackend
from dalkit.cache.capture import note_write
from dalkit.cache.errors import CacheConfigurationError, CacheError, UncacheableStatementError
from dalkit.cache.install import install
from dalkit.cache.query_cache import QueryCache

__all__ = [
    "AsyncQueryCache",
    "AsyncRedisBackend",
    "CacheConfigurationError",
    "CacheError",
    "MemoryBackend",
    "QueryCache",
    "RedisBackend",
    "UncacheableStatementError",
    "install",
    "note_write",
]
