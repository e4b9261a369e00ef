"""install(db, cache): bind a query cache to a database: its key dialect, the write capture
on its engine, ``db.cache`` and the ``cache`` area of ``db.get_stats()``."""

from __future__ import annotations

from typing import Any, TypeVar

from dalkit.cache.capture import WriteCapture
from dalkit.cache.core import CacheCore
from dalkit.cache.errors import CacheConfigurationError

__all__ = ["install"]

CacheT = TypeVar("CacheT", bound=CacheCore)


def install(database: Any, cache: CacheT) -> CacheT:
    """Bind a query cache to a database; ``database.cache`` is it from now on.

    Args:
        database: A Database (takes a QueryCache) or an AsyncDatabase (an AsyncQueryCache).
        cache: The cache, not yet bound.

    Returns:
        ``cache``.

    Raises:
        CacheConfigurationError: The cache is of the other kind, or bound already.

    Examples:
        ``cache = install(db, QueryCache(MemoryBackend()))``
    """
    engine = database.engine
    is_async = hasattr(engine, "sync_engine")
    if is_async != cache.is_async:
        wanted = "AsyncQueryCache" if is_async else "QueryCache"
        raise CacheConfigurationError(
            f"{type(database).__name__} needs a {wanted}, not a {type(cache).__name__}"
        )
    sync_engine = engine.sync_engine if is_async else engine
    cache._bind(database, sync_engine)
    for replica in database.replica_engines:  # their reads are served from this cache too
        cache._serve_engine(getattr(replica, "sync_engine", replica))
    WriteCapture(cache, sync_engine).install()
    database.cache = cache
    database.add_stats("cache", lambda reset: cache.pop_stats() if reset else cache.get_stats())
    return cache
