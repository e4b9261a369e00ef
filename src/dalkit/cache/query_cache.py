"""QueryCache: the sync query cache of a Database: ``cached()`` reads, ``memoize``, commit-time
invalidation and the statistics; see :mod:`dalkit.cache.versions` for why it is never stale."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.engine import Result
from sqlalchemy.orm import Session

from dalkit.cache.core import CacheCore, freeze, sync_session, thaw
from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.install import install
from dalkit.cache.keys import function_key
from dalkit.cache.versions import entry_tables

__all__ = ["QueryCache"]

P = ParamSpec("P")
R = TypeVar("R")


class QueryCache(CacheCore):
    """Query results cached in ``backend`` (a MemoryBackend or RedisBackend) for
    ``default_ttl`` seconds, and dropped when a commit writes one of the tables they read.

    ``Database(url, cache=QueryCache(backend=MemoryBackend(max_entries=10_000)))``; then
    ``db.cache.cached(session, select(User).where(...))`` and ``@db.cache.memoize(...)``.
    """

    def __init__(self, backend: Any, **options: Any) -> None:
        if not callable(getattr(backend, "fetch", None)):
            raise CacheConfigurationError(
                f"{type(backend).__name__} has no sync API: a sync Database's QueryCache takes "
                "MemoryBackend or RedisBackend (AsyncRedisBackend goes with AsyncQueryCache)"
            )
        super().__init__(backend, **options)

    def install(self, database: Any) -> None:
        """Bind this cache to ``database``: what ``Database(..., cache=...)`` calls."""
        install(database, self)

    def cached(
        self,
        session: Session,
        statement: Any,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        tables: Iterable[Any] | None = None,
    ) -> Result[Any]:
        """``session.execute(statement, params)``, served from the cache while no commit has
        written any table the statement reads. A text statement must declare ``tables``."""
        key, names = self.describe(statement, params, tables)
        return self.read(session, statement, params, names, key, self.ttl_of(ttl))

    def read(
        self,
        session: Session,
        statement: Any,
        params: Mapping[str, Any] | None,
        tables: tuple[str, ...],
        key: str,
        ttl: float,
    ) -> Result[Any]:
        """The read-through itself, for callers that built the key and tables already."""
        inner = sync_session(session)
        if inner.autoflush and (inner.new or inner.dirty or inner.deleted):
            inner.flush()  # as the query would have: the flush marks its tables as written
        self._apply_pending_if_due()

        def run() -> Result[Any]:
            return session.execute(statement, params)

        if self.bypass_reason(inner, tables, statement) is not None:
            self.count("bypasses")
            return run()
        store = self.may_store(inner)
        found = self._lookup(key, tables)
        if found is None:
            return run()
        payload, tokens = found
        if payload is not None:
            self.count("hits")
            return thaw(inner, statement, payload)
        flight, leader = self.join_or_lead(key, tokens)
        if leader:
            # a flight that landed between our lookup and now has stored its result: use it
            again = self._lookup(key, tables)
            if again is not None and again[0] is not None:
                self.land(key, flight, again[0])
                self.count("hits")
                return thaw(inner, statement, again[0])
        else:
            flight.done.wait()
            if flight.payload is not None:
                self.count("hits")
                return thaw(inner, statement, flight.payload)
        self.count("misses")
        shared: Any = None
        try:
            frozen, shared = freeze(run(), self.shared)
            if store:
                self._store(key, tokens, shared, ttl)
        finally:
            if leader:
                self.land(key, flight, shared)
        return frozen()

    def memoize(
        self, *, ttl: float | None = None, tables: Iterable[Any]
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Cache a function's result by its arguments, dropped when a commit writes one of
        ``tables`` (the function's result must be picklable)."""
        names = entry_tables(str(getattr(t, "name", t)) for t in tables)
        seconds = self.ttl_of(ttl)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(fn)
            def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
                self._apply_pending_if_due()
                if self.bypass_reason(None, names) is not None:
                    self.count("bypasses")
                    return fn(*args, **kwargs)
                key = function_key(self._prefix, fn.__qualname__, args, dict(kwargs))
                found = self._lookup(key, names)
                if found is not None and found[0] is not None:
                    self.count("hits")
                    value: R = pickle.loads(found[0])
                    return value
                if found is None:
                    return fn(*args, **kwargs)
                self.count("misses")
                value = fn(*args, **kwargs)
                self._store(key, found[1], pickle.dumps(value), seconds)
                return value

            return memoized

        return decorate

    def invalidate(self, tables: Iterable[str]) -> None:
        """Make every entry reading one of ``tables`` unservable, now. Never raises: when the
        backend fails, the invalidation stays pending (and the cache bypassed) until it
        succeeds."""
        names = self.take_pending(tables)
        if not names:
            return
        try:
            self.backend.bump(self.token_names(names))
        except Exception as error:
            self.add_pending(names)
            self.failed("invalidation", error)
            return
        self.count("invalidations", len(names))

    def invalidate_soon(self, tables: Iterable[str]) -> None:
        """From engine events: the sync cache can apply it at once."""
        self.invalidate(tables)

    def invalidate_all(self) -> None:
        """Make every entry unservable (what DDL does)."""
        self.invalidate(["*"])

    # -- the backend, failures caught ------------------------------------------------------
    @property
    def _prefix(self) -> str:
        return self.namespace

    def _lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Any, Any] | None:
        try:
            payload, tokens = self.backend.fetch(key, self.token_names(tables))
        except Exception as error:
            self.failed("read", error)
            self.count("bypasses")
            return None
        return payload, tokens

    def _store(self, key: str, tokens: Any, payload: Any, ttl: float) -> None:
        try:
            self.backend.store(key, tokens, payload, ttl)
        except Exception as error:
            self.failed("write", error)
            return
        self.count("sets")

    def _apply_pending_if_due(self) -> None:
        if self.retry_due():
            self.invalidate(())

    def __repr__(self) -> str:
        return f"QueryCache({self.backend!r}, default_ttl={self.default_ttl})"
