"""Repository reads through the cache: a repository class opts in with ``cache_ttl = 60`` and
its ``get``, ``get_many``, ``find``, ``list``, ``first``, ``count``, ``exists``, ``paginate``
and ``paginate_cursor`` are served from its database's cache (the SQL hooks call
``read_through`` where they would call ``session.execute``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn  # importable without greenlet: the sync API needs none

from dalkit.cache.core import cache_for
from dalkit.query.plain_entities import load_plain

__all__ = ["cache_ttl_of", "read_entities", "read_through"]


def cache_ttl_of(repository: Any) -> float | None:
    """The repository's ``cache_ttl`` class attribute.

    Args:
        repository: A repository instance.

    Returns:
        Its seconds, or None (also for 0): not cached.
    """
    ttl = getattr(type(repository), "cache_ttl", None)
    return float(ttl) if ttl else None


def read_through(repository: Any, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
    """``repository.session.execute(statement, params)``, served from the cache when the
    repository opted in and its database has a cache.

    Entities served from the cache are merged into the repository's session without a
    query: they behave like loaded ones, and changing one flushes an UPDATE.

    Args:
        repository: The repository reading (its ``session`` and ``cache_ttl``).
        statement: The select to run.
        params: Bound parameters passed apart from the statement.

    Returns:
        What ``session.execute`` returns: a Result for a Session, an awaitable of one for
        an AsyncSession, so the async source and its generated sync twin read the same
        (``await read_through(self, statement)`` / ``read_through(self, statement)``).
    """
    cached = _from_cache(repository, statement, params)
    return repository.session.execute(statement, params) if cached is None else cached


def read_entities(repository: Any, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
    """The entities of ``statement``: from the cache when the repository opted in, else read
    as plain entities when that gives the same ones (see `dalkit.query.plain_entities`), else
    through ``session.execute``.

    Args:
        repository: The repository reading (its ``session`` and ``cache_ttl``).
        statement: A select of the repository's model.
        params: Bound parameters passed apart from the statement.

    Returns:
        The list of entities for a Session; an awaitable of it for an AsyncSession.
    """
    session = repository.session
    cached = _from_cache(repository, statement, params, entities=True)
    if cached is not None:
        return cached
    inner = getattr(session, "sync_session", None)  # an AsyncSession's
    if inner is None:
        return _read(session, statement, params)
    # one greenlet for the whole read, as AsyncSession.execute takes one
    return greenlet_spawn(_read, inner, statement, params)


def _from_cache(
    repository: Any, statement: Any, params: Mapping[str, Any] | None, entities: bool = False
) -> Any:
    """The cache's read (a Result, or its entities with ``entities``; an awaitable of it in
    async code) when the repository opted in and its database has a cache; else None."""
    ttl = cache_ttl_of(repository)
    cache: Any = cache_for(repository.session) if ttl is not None else None
    if cache is None:
        return None
    key, tables = cache.describe(statement, params, None)
    read = cache.read_entities if entities else cache.read
    return read(repository.session, statement, params, tables, key, cache.ttl_of(ttl))


def _read(session: Session, statement: Any, params: Mapping[str, Any] | None) -> list[Any]:
    entities = load_plain(session, statement, params)
    if entities is None:
        return list(session.execute(statement, params).scalars().all())
    return entities
