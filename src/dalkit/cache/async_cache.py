"""AsyncQueryCache: the query cache of an AsyncDatabase; the twin of QueryCache, its
backend calls and its invalidation awaited (before the transaction call returns)."""

from __future__ import annotations

import asyncio
import functools
import pickle
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession

from dalkit.cache.core import CacheCore, freeze, sync_session, thaw
from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.install import install
from dalkit.cache.keys import function_key
from dalkit.cache.versions import entry_tables

__all__ = ["AsyncQueryCache"]

P = ParamSpec("P")
R = TypeVar("R")


class AsyncQueryCache(CacheCore):
    """Query results cached in ``backend`` (a MemoryBackend or AsyncRedisBackend); see
    :class:`~dalkit.cache.QueryCache`. ``AsyncDatabase(url, cache=AsyncQueryCache(...))``."""

    is_async = True

    def __init__(self, backend: Any, **options: Any) -> None:
        if not callable(getattr(backend, "fetch_async", None)):
            raise CacheConfigurationError(
                f"{type(backend).__name__} has no async API: an AsyncQueryCache takes "
                "MemoryBackend or AsyncRedisBackend"
            )
        super().__init__(backend, **options)

    def install(self, database: Any) -> None:
        """Bind this cache to ``database``: what ``Database(..., cache=...)`` calls."""
        install(database, self)

    async def cached(
        self,
        session: AsyncSession,
        statement: Any,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        tables: Iterable[Any] | None = None,
    ) -> Result[Any]:
        """``await session.execute(statement, params)``, served from the cache while no
        commit has written a table the statement reads; text statements declare ``tables``."""
        key, names = self.describe(statement, params, tables)
        return await self.read(session, statement, params, names, key, self.ttl_of(ttl))

    async def read(
        self,
        session: AsyncSession,
        statement: Any,
        params: Mapping[str, Any] | None,
        tables: tuple[str, ...],
        key: str,
        ttl: float,
    ) -> Result[Any]:
        """The read-through itself, for callers that built the key and tables already."""
        inner = sync_session(session)
        if inner.autoflush and (inner.new or inner.dirty or inner.deleted):
            await session.flush()
        await self._apply_pending_if_due()

        async def run() -> Result[Any]:
            result: Result[Any] = await session.execute(statement, params)
            return result

        if self.bypass_reason(inner, tables, statement) is not None:
            self.count("bypasses")
            return await run()
        store = self.may_store(inner)
        found = await self._lookup(key, tables)
        if found is None:
            return await run()
        payload, tokens = found
        if payload is not None:
            self.count("hits")
            return thaw(inner, statement, payload)
        flight, leader = self.join_or_lead(key, tokens)
        if leader:
            waiter = flight.waiter = asyncio.get_running_loop().create_future()
            # a flight that landed between our lookup and now has stored its result: use it
            try:
                again = await self._lookup(key, tables)
            except BaseException:
                self.land(key, flight, None)  # the tasks waiting on this flight run their own
                waiter.set_result(None)
                raise
            if again is not None and again[0] is not None:
                self.land(key, flight, again[0])
                waiter.set_result(None)
                self.count("hits")
                return thaw(inner, statement, again[0])
        elif flight.waiter is not None and flight.waiter.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(flight.waiter)
            if flight.payload is not None:
                self.count("hits")
                return thaw(inner, statement, flight.payload)
        self.count("misses")
        shared: Any = None
        try:
            frozen, shared = freeze(await run(), self.shared)
            if store:
                await self._store(key, tokens, shared, ttl)
        finally:
            if leader:
                self.land(key, flight, shared)
                if not flight.waiter.done():
                    flight.waiter.set_result(None)
        return frozen()

    def memoize(
        self, *, ttl: float | None = None, tables: Iterable[Any]
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Cache a coroutine function's result by its arguments, dropped when a commit writes
        one of ``tables``."""
        names = entry_tables(str(getattr(t, "name", t)) for t in tables)
        seconds = self.ttl_of(ttl)

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(fn)
            async def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
                await self._apply_pending_if_due()
                if self.bypass_reason(None, names) is not None:
                    self.count("bypasses")
                    return await fn(*args, **kwargs)
                key = function_key(self._prefix, fn.__qualname__, args, dict(kwargs))
                found = await self._lookup(key, names)
                if found is not None and found[0] is not None:
                    self.count("hits")
                    value: R = pickle.loads(found[0])
                    return value
                if found is None:
                    return await fn(*args, **kwargs)
                self.count("misses")
                value = await fn(*args, **kwargs)
                await self._store(key, found[1], pickle.dumps(value), seconds)
                return value

            return memoized

        return decorate

    async def invalidate(self, tables: Iterable[str]) -> None:
        """Make every entry reading one of ``tables`` unservable, now; never raises (a failed
        invalidation stays pending, and the cache bypassed, until it succeeds)."""
        names = self.take_pending(tables)
        if not names:
            return
        try:
            await self.backend.bump_async(self.token_names(names))
        except Exception as error:
            self.add_pending(names)
            self.failed("invalidation", error)
            return
        self.count("invalidations", len(names))

    async def invalidate_all(self) -> None:
        await self.invalidate(["*"])

    def invalidate_soon(self, tables: Iterable[str]) -> None:
        """From sync code (engine events): bypass until applied, applied on the running loop
        if there is one, else by the next cache call."""
        names = list(tables)
        if not getattr(self.backend, "shared", True):
            self.backend.bump(self.token_names(names))  # process memory: nothing to await
            self.count("invalidations", len(names))
            return
        self.add_pending(names)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.invalidate(()))
        _background.add(task)
        task.add_done_callback(_background.discard)

    # -- the backend, failures caught ------------------------------------------------------
    @property
    def _prefix(self) -> str:
        return self.namespace

    async def _lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Any, Any] | None:
        try:
            payload, tokens = await self.backend.fetch_async(key, self.token_names(tables))
        except Exception as error:
            self.failed("read", error)
            self.count("bypasses")
            return None
        return payload, tokens

    async def _store(self, key: str, tokens: Any, payload: Any, ttl: float) -> None:
        try:
            await self.backend.store_async(key, tokens, payload, ttl)
        except Exception as error:
            self.failed("write", error)
            return
        self.count("sets")

    async def _apply_pending_if_due(self) -> None:
        if self.retry_due():
            await self.invalidate(())

    def __repr__(self) -> str:
        return f"AsyncQueryCache({self.backend!r}, default_ttl={self.default_ttl})"


_background: set[asyncio.Task[None]] = set()
