"""Conduit's query cache: in this process's memory, or in Redis when ``DALKIT_REDIS_URL`` is
set (every process then shares the entries, and a commit in any of them invalidates them for
all), and the dependency giving repositories that read through it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request

from conduit.repositories import CACHE_TTL_S, CachedRepository
from conduit.settings import Settings
from dalkit import AsyncRedisManager, current_async_session
from dalkit.cache import AsyncQueryCache, AsyncRedisBackend, MemoryBackend

__all__ = ["cached_repository", "open_cache"]

R = TypeVar("R", bound="CachedRepository[Any]")

#: entries kept by the memory backend, the least recently used dropped first
MEMORY_ENTRIES = 10_000


def open_cache(settings: Settings) -> tuple[AsyncQueryCache, AsyncRedisManager | None]:
    """The query cache ``settings`` ask for, and the Redis manager to close on shutdown."""
    if settings.redis_url:
        manager = AsyncRedisManager(settings.redis_url)
        backend: Any = AsyncRedisBackend(manager, prefix="conduit:cache")
        return AsyncQueryCache(backend, default_ttl=CACHE_TTL_S), manager
    memory = MemoryBackend(max_entries=MEMORY_ENTRIES)
    return AsyncQueryCache(memory, default_ttl=CACHE_TTL_S), None


def cached_repository(repository_class: type[R]) -> Callable[[Request], Coroutine[Any, Any, R]]:
    """Like ``dalkit.integrations.fastapi.repository``, with the application's cache."""

    async def dependency(request: Request) -> R:
        repository = repository_class(current_async_session())
        repository.query_cache = request.app.state.db.cache
        return repository

    dependency.__name__ = f"cached_{repository_class.__name__}"
    return dependency
