"""Where entries and table tokens live: process memory, or a Redis server shared by processes."""

from __future__ import annotations

from dalkit.cache.backends.memory import MemoryBackend
from dalkit.cache.backends.redis import RedisBackend
from dalkit.cache.backends.redis_async import AsyncRedisBackend

__all__ = ["AsyncRedisBackend", "MemoryBackend", "RedisBackend"]
