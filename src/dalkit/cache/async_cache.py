"""The query cache front end: ``cached()`` reads, ``memoize``, commit-time invalidation
(done before the transaction call returns) and the statistics. Why it is never stale:
[`dalkit.cache.versions`][]."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession

from dalkit.cache.call_keys import CallKeys
from dalkit.cache.catalog_queries import catalog_query
from dalkit.cache.core import CacheCore, log, sync_session
from dalkit.cache.install import install
from dalkit.cache.keys import schema_part, tenant_part
from dalkit.cache.reads import declared_names
from dalkit.cache.results import freeze, pickled, shaped, thaw
from dalkit.cache.tables import ALL, count_tables, is_call
from dalkit.cache.versions import entry_tables, replayed_by
from dalkit.engine.autoroute import PRIMARY_POSITION, PROBE, commit_position, route_miss
from dalkit.engine.replicas import parse_lsn

P = ParamSpec("P")
R = TypeVar("R")


class AsyncQueryCache(CacheCore):
    """Query results cached in a backend for ``default_ttl`` seconds, and dropped when a
    commit writes one of the tables they read.

    Args:
        backend: Where entries live: a [`MemoryBackend`][dalkit.cache.MemoryBackend] (this
            process) or the Redis backend,
            [`AsyncRedisBackend`][dalkit.cache.AsyncRedisBackend] (every process).
        default_ttl: Seconds an entry stays, unless a read names its own ``ttl``.
        serve_snapshot_reads: Serve REPEATABLE READ / SERIALIZABLE reads too (off: they
            bypass the cache).
        serve_row_security: Serve reads of tables with PostgreSQL's row-level security too
            (off: they bypass the cache, since the rows a policy shows depend on the role and
            the settings of the session, which the key does not hold; on only when every
            session the cache serves sees the same rows, or the key tells them apart, as
            dalkit's tenant scoping or a ``database_id`` per role does).
        retry_interval: Seconds between retries of a failed invalidation.
        warn_interval: Seconds between warnings about failing invalidations.
        database_id: What tells this database's entries from another's in a shared backend
            (default: derived from the URL, never its password).

    Raises:
        CacheConfigurationError: The backend has no API of this kind (sync/async), or an
            option is out of range.

    Examples:
        ``AsyncDatabase(url, cache=AsyncQueryCache(MemoryBackend(max_entries=10_000)))``;
        then ``await db.cache.cached(session, select(User).where(...))``.
    """

    def install(self, database: Any) -> None:
        """Bind this cache to ``database``: what ``Database(..., cache=...)`` calls.

        Args:
            database: The database whose reads this cache serves.
        """
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
        """Execute ``statement``, served from the cache while no commit has written a table
        it reads.

        Args:
            session: The session to run it in (and to merge cached entities into).
            statement: A SELECT (Core or ORM) or a text statement.
            params: Bound parameters, as for ``session.execute``.
            ttl: Seconds to keep the entry (default: the cache's ``default_ttl``).
            tables: The tables a text statement reads (required for those).

        Returns:
            The result, as ``session.execute(statement, params)`` returns it.

        Raises:
            UncacheableStatementError: A write, or a text statement without ``tables``.
        """
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
        """The read-through itself, for callers that built the key and tables already.

        A hit costs one backend round trip and no database connection. A miss runs the
        query once per process (and once in all with ``stampede_lock=True``): concurrent
        callers of the same key wait for it.

        Args:
            session: The AsyncSession to run the query in on a miss.
            statement: The SELECT.
            params: Its bound values.
            tables: The tables it reads: their version tokens tag the entry.
            key: The cache key (from ``describe()``).
            ttl: Seconds the entry stays.

        Returns:
            The result, as ``await session.execute(statement, params)`` returns it.
        """
        result: Result[Any] = await self._read(session, statement, params, tables, key, ttl, False)
        return result

    async def read_entities(
        self,
        session: AsyncSession,
        statement: Any,
        params: Mapping[str, Any] | None,
        tables: tuple[str, ...],
        key: str,
        ttl: float,
    ) -> list[Any]:
        """`read()` for a select of entities (the repositories' reads): the entities of its
        ``result.scalars().all()``, served from the cache without building the result.

        Args:
            session: The AsyncSession to run the query in on a miss.
            statement: A select of entities.
            params: Its bound values.
            tables: The tables it reads.
            key: The cache key (from ``describe()``).
            ttl: Seconds the entry stays.

        Returns:
            The entities, in row order.
        """
        entities: list[Any] = await self._read(session, statement, params, tables, key, ttl, True)
        return entities

    async def _read(
        self,
        session: AsyncSession,
        statement: Any,
        params: Mapping[str, Any] | None,
        tables: tuple[str, ...],
        key: str,
        ttl: float,
        entities: bool,
    ) -> Any:
        inner = sync_session(session)
        key += schema_part(inner, statement)  # "" unless a schema_translate_map is in force
        # _is_clean() is what Session._autoflush checks; .new/.dirty/.deleted build sets
        if inner.autoflush and not inner._is_clean():
            await session.flush()  # as the query would have: the flush marks what it writes
        await self._apply_pending_if_due()
        expanded = self.catalog.expand(tables)
        if expanded is None:  # in the session only if it has begun: no snapshot taken early
            expanded = await self._read_catalog(tables, session if inner.in_transaction() else None)
        tables = expanded

        async def run() -> Result[Any]:
            result: Result[Any] = await session.execute(statement, params)
            return result

        if self.bypass_reason(inner, tables, statement, key) is not None:
            self.count("bypasses")
            return shaped(await run(), entities)
        found = await self._lookup(key, tables)
        if found is None:
            return shaped(await run(), entities)
        payload, tokens = found
        served = self._serve(inner, statement, payload, entities)
        if served is not None:
            return served
        flight, leader = self.join_or_lead(key, tokens)
        lock: Any = None
        if leader:
            try:
                # a flight that landed since our lookup (or a process holding the lock) may
                # have stored the result: read it before running the query
                again = await self._lookup(key, tables)
                if self.locks_across_processes and (again is None or again[0] is None):
                    lock = await self.backend.lock_async(key)
                    if lock is not None:
                        again = await self._lookup(key, tables)
            except BaseException:
                await self._unlock(lock)
                self.land(key, flight, None)  # the callers waiting on this flight run their own
                raise
            served = None if again is None else self._serve(inner, statement, again[0], entities)
            if served is not None:
                await self._unlock(lock)
                self.land(key, flight, again[0])  # type: ignore[index]
                return served
        else:
            await flight.wait_async()
            served = self._serve(inner, statement, flight.payload, entities)
            if served is not None:
                return served
        self.count("misses")
        shared: Any = None
        # decided on a miss only (the session is as after the flush: ~0.4 us a hit); a result
        # read on a replica that lacks a commit the tokens stand for is never stored
        store = self.may_store(inner) and route_miss(inner, replayed_by(tokens))
        try:
            frozen, shared = freeze(await run(), self.shared)
            if store and shared is not None:
                await self._store(key, tokens, shared, ttl)
        finally:
            if leader:
                await self._unlock(lock)
                self.land(key, flight, shared)
        return shaped(frozen(), entities)

    def memoize(
        self, *, ttl: float | None = None, tables: Iterable[Any], name: str | None = None
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Cache a function's result by its arguments' values, dropped when a commit writes
        one of ``tables``.

        Args:
            ttl: Seconds to keep a result (default: the cache's ``default_ttl``).
            tables: The tables (names, Tables or models) the result is computed from.
            name: What its entries are kept under (default: the function's module and
                qualified name, and for a function a factory made, the values it captured
                that parameterise it: numbers, strings, dates, enum members, classes...).
                Functions memoized under one name share entries.

        Returns:
            A decorator; the function's results must be picklable. Its calls raise
            `UncacheableCallError` for an argument that has no value to key by (an object
            whose repr is its memory address).

        Raises:
            UncacheableStatementError: One of ``tables`` is not a table name, Table or model.
        """
        declared = entry_tables(declared_names(tables))
        seconds = self.ttl_of(ttl)

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            keys = CallKeys(self.namespace, fn, name)

            @functools.wraps(fn)
            async def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
                key = keys.key(args, kwargs)  # first: a bad argument fails whatever the cache
                await self._apply_pending_if_due()
                names = self.catalog.expand(declared)
                if names is None:  # a connection of its own: there is no session here
                    names = await self._read_catalog(declared, None)
                if self.bypass_reason(None, names) is not None:
                    self.count("bypasses")
                    return await fn(*args, **kwargs)
                key += tenant_part(names) or ""  # per tenant when it reads tenant-scoped tables
                found = await self._lookup(key, names)
                if found is not None and found[0] is not None:
                    self.count("hits")
                    value: R = pickle.loads(found[0])
                    return value
                if found is None:
                    return await fn(*args, **kwargs)
                self.count("misses")
                value = await fn(*args, **kwargs)
                payload = pickled(value)  # None: returned, not stored; nor when it may be stale
                if payload is not None and self.may_store(self.live_session()):
                    await self._store(key, found[1], payload, seconds)
                return value

            return memoized

        return decorate

    async def invalidate(self, tables: Iterable[str], committed: Any = None) -> None:
        """Make every entry reading one of ``tables`` unservable, now.

        Raises no failure of the backend: then, or when the task is cancelled, the tables
        stay pending (and the cache bypassed) until their invalidation succeeds.

        Args:
            tables: The names of the tables written.
            committed: The transaction scope whose commit wrote them, if known: with read
                replicas, the WAL position the router read after that commit tags the new
                tokens without another round trip.
        """
        names, taken = self.pending.take(tables)
        if not names:
            return
        try:
            if any(map(is_call, names)):  # functions called: what they write
                if self.catalog.refresh_due():
                    await self._refresh_catalog()
                resolved = self.catalog.resolve(names)
                names = sorted(resolved) if resolved is not None else [ALL]  # (unreadable)
            if names:
                position = await self._commit_position(committed)
                await self.backend.bump_async(self.token_names(names), position)
        except BaseException as error:  # the backend failed, or the task was cancelled (a
            self.pending.add(names)  # deadline): the commit stands, so its invalidation too
            if not isinstance(error, Exception):
                raise
            self.failed("invalidation", error)
            return
        self.pending.settle(taken)
        self.count("invalidations", count_tables(names))

    async def invalidate_all(self) -> None:
        """Make every entry unservable (what DDL does)."""
        await self.invalidate(["*"])

    async def _commit_position(self, committed: Any) -> int | None:
        # with read replicas: the WAL position a replica must have replayed to compute entries
        # under the new tokens (read after COMMIT, so past it): the router's, read for
        # read-your-writes, else read here. Unknown: misses of these tables use the primary
        if not self.replicated:
            return None
        known = None if committed is None else commit_position(committed)
        if known is not None:
            return known
        try:
            async with self.database.engine.connect() as connection:
                found = await connection.exec_driver_sql(PRIMARY_POSITION, execution_options=PROBE)
                return parse_lsn(found.scalar_one())
        except Exception as error:
            log.warning("no WAL position for the cache's tokens (%s)", type(error).__name__)
            return None

    async def _refresh_catalog(self) -> None:
        """Read the catalog (again) on a connection of its own, for what the functions a
        commit called write (`dalkit.cache.functions`). When it cannot be read, the map read
        before answers; without one, the calls invalidate everything."""
        try:
            await self._read_catalog((), None)
        except Exception as error:
            log.warning("query cache: catalog not read (%s: %s)", type(error).__name__, error)

    async def _read_catalog(
        self, tables: tuple[str, ...], session: AsyncSession | None
    ) -> tuple[str, ...]:
        """Read the catalog (`dalkit.cache.catalog`), in ``session`` or on a connection of
        its own, and return ``tables`` with what it says they depend on too.

        A session that has not begun is not begun here: on SQLite its snapshot would then
        predate the tokens read next, and its result could not be stored (``may_store``)."""
        query = catalog_query(self.catalog.dialect_name)
        assert query is not None  # CatalogMap.expand asks for the catalog only when there is one
        if session is not None:
            rows = (await session.execute(query)).all()
        else:
            async with self.database.engine.connect() as connection:
                rows = (await connection.execute(query)).all()
        self.catalog.load(rows)
        expanded = self.catalog.expand(tables, read=True)
        assert expanded is not None
        return expanded

    def _serve(
        self, session: Any, statement: Any, payload: Any, entities: bool = False
    ) -> Result[Any] | list[Any] | None:
        # None: nothing cached, or an entry of another version of the model (run the query)
        served = None if payload is None else thaw(session, statement, payload, entities)
        if served is not None:
            self.count("hits")
        return served

    # -- the backend, failures caught ------------------------------------------------------
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

    async def _unlock(self, lock: Any) -> None:
        if lock is not None:
            await self.backend.unlock_async(lock)

    async def _apply_pending_if_due(self) -> None:
        if self.pending.due(self.retry_interval):
            await self.invalidate(())
