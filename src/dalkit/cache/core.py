"""What the sync and async caches share without I/O: configuration, statistics, pending
invalidations, the decision to bypass and single-flight bookkeeping."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
import os
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from time import monotonic
from typing import Any

from sqlalchemy.orm import Session

from dalkit.cache import bypass
from dalkit.cache.bypass import WRITTEN
from dalkit.cache.catalog import CatalogMap
from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.flights import Flight
from dalkit.cache.keys import KeyBuilder, namespace_part, tenant_part
from dalkit.cache.pending import PendingInvalidations
from dalkit.cache.reads import statement_tables
from dalkit.cache.tables import ALL, count_tables, each_named, is_call
from dalkit.cache.versions import Tokens, entry_tables
from dalkit.config import is_memory_sqlite

__all__ = ["WRITTEN", "CacheCore", "cache_for", "sync_session"]

log = logging.getLogger("dalkit.cache")

# tells this process's in-memory SQLite databases from those of other processes sharing a Redis
_PROCESS = uuid.uuid4().hex
_STAT_NAMES = ("hits", "misses", "sets", "invalidations", "bypasses", "errors")

# pool -> cache: how a repository (which only has a session) finds its database's cache; the
# cache weakly too, as a value keeping its own key (via the engine) alive would live forever
_CACHES: weakref.WeakKeyDictionary[Any, weakref.ref[CacheCore]] = weakref.WeakKeyDictionary()


def sync_session(session: Any) -> Session:
    """The ORM Session behind ``session``: itself, or an AsyncSession's ``sync_session``.

    Raises:
        TypeError: ``session`` is neither.
    """
    inner = getattr(session, "sync_session", session)
    if not isinstance(inner, Session):
        raise TypeError(f"expected a Session or AsyncSession, got {type(session).__name__}")
    return inner


def cache_for(session: Any) -> CacheCore | None:
    """The cache installed on the database ``session`` is bound to; None when it has none."""
    bind = sync_session(session).get_bind()
    found = _CACHES.get(getattr(bind, "pool", None) or bind.engine.pool)
    return None if found is None else found()


class CacheCore:
    """Configuration and bookkeeping of one query cache; see [`QueryCache`][dalkit.cache.QueryCache]
    and [`AsyncQueryCache`][dalkit.cache.AsyncQueryCache], which add the I/O."""

    def __init__(
        self,
        backend: Any,
        *,
        default_ttl: float = 60.0,
        serve_snapshot_reads: bool = False,
        serve_row_security: bool = False,
        retry_interval: float = 0.5,
        warn_interval: float = 30.0,
        database_id: str | None = None,
    ) -> None:
        _check_ttl(default_ttl, "default_ttl")
        if not callable(getattr(backend, "fetch_async" if self.is_async else "fetch", None)):
            raise CacheConfigurationError(
                f"{type(backend).__name__} has no {'async' if self.is_async else 'sync'} API: "
                "QueryCache takes MemoryBackend or RedisBackend, AsyncQueryCache takes "
                "MemoryBackend or AsyncRedisBackend"
            )
        self.backend = backend
        self.default_ttl = float(default_ttl)
        #: serve and fill the cache at REPEATABLE READ / SERIALIZABLE too (off: a cached
        #: result may be newer than the transaction's snapshot)
        self.serve_snapshot_reads = serve_snapshot_reads
        #: serve and fill the cache for tables with row-level security too (the class says when)
        self.serve_row_security = serve_row_security
        #: what tells this database's entries and tokens from another's in a shared backend;
        #: by default derived from the URL (user, host, port, database; never the password or
        #: driver), so every process must spell the URL alike or pass the same ``database_id``
        self.database_id = database_id
        self.namespace = str(getattr(backend, "prefix", "dalkit:cache"))
        self.retry_interval = retry_interval
        self.warn_interval = warn_interval
        self._database: weakref.ref[Any] | None = None
        #: whether the bound database reads from replicas (its public ``replica_engines``)
        self.replicated = False
        self.keys: KeyBuilder | None = None
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.pending = PendingInvalidations()
        self._last_warning = -float("inf")
        self._snapshot_per_transaction = False
        #: a PostgreSQL dialect, whose default isolation (read at its first connection) may be
        #: a snapshot level: every read then bypasses, as at an explicit one
        self.server_isolation: Any = None
        self._flights: dict[str, Flight] = {}
        self._shape_tables: dict[Any, tuple[str, ...]] = {}
        self._token_names: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.catalog = CatalogMap("")  # views, partitions, triggers: known once bound (_bind)

    @property
    def is_async(self) -> bool:
        """Whether this cache serves an AsyncDatabase (its reads are coroutines)."""
        return inspect.iscoroutinefunction(getattr(self, "cached", None))

    @property
    def locks_across_processes(self) -> bool:
        """Whether a miss takes the backend's stampede lock (``stampede_lock=True``)."""
        return bool(getattr(self.backend, "stampede_lock", False))

    @property
    def database(self) -> Any:
        """The bound database, held weakly (the engine's capture holds this cache); or None."""
        return None if self._database is None else self._database()

    # -- binding ---------------------------------------------------------------------------
    def _bind(self, database: Any, sync_engine: Any) -> None:
        if self._database is not None:
            raise CacheConfigurationError("this cache is already bound to a database")
        self._database = weakref.ref(database)
        self.replicated = bool(database.replica_engines)
        if self.database_id is None:
            url = sync_engine.url
            ident = (
                f"{url.get_backend_name()}://{url.username}@{url.host}:{url.port}/{url.database}"
            )
            # one database's: two Databases sharing one memory backend (or a Redis) see each
            # other's commits; named by engine, each served entries the other's made stale
            if is_memory_sqlite(url):  # in the engine's connection, or (cache=shared) the
                # process's: two such databases sharing a Redis served each other's entries
                shared = url.query.get("cache") == "shared"
                ident += f"#{_PROCESS}.{os.getpid()}" if shared else f"#{uuid.uuid4().hex}"
            self.database_id = hashlib.blake2b(ident.encode(), digest_size=5).hexdigest()
        self.namespace = f"{self.namespace}:{self.database_id}{namespace_part(sync_engine.url)}"
        self._token_names.clear()  # names made before the id was known are not its names
        self.keys = KeyBuilder(sync_engine.dialect, self.namespace)
        self._snapshot_per_transaction = sync_engine.dialect.name == "sqlite"
        if sync_engine.dialect.name == "postgresql":
            self.server_isolation = sync_engine.dialect
        self.catalog = CatalogMap(sync_engine.dialect.name)
        _CACHES[sync_engine.pool] = weakref.ref(self)

    def _serve_engine(self, sync_engine: Any) -> None:
        """Serve sessions bound to ``sync_engine`` too: a replica's (hits; see route_miss)."""
        _CACHES[sync_engine.pool] = weakref.ref(self)

    def token_names(self, tables: Iterable[str]) -> Sequence[str]:
        """The backend's names for the tokens of ``tables`` of this database."""
        prefix = f"{self.database_id}/" if self.database_id else ""
        return each_named(tables, prefix.__add__, self._token_names)

    # -- statistics ------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def get_stats(self) -> dict[str, Any]:
        """The counters since the start (or the last ``pop_stats``).

        Returns:
            ``hits``, ``misses``, ``sets``, ``invalidations`` (tables bumped), ``bypasses``,
            ``errors`` (backend failures), ``hit_ratio`` (hits / (hits + misses)) and
            ``pending`` (invalidations waiting for the backend to come back).
        """
        return self._snapshot(reset=False)

    def pop_stats(self) -> dict[str, Any]:
        """Like [`get_stats`][dalkit.cache.core.CacheCore.get_stats], then start the
        counters over.

        Returns:
            The counters before the reset.
        """
        return self._snapshot(reset=True)

    def _snapshot(self, reset: bool) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = {name: self._stats[name] for name in _STAT_NAMES}
            if reset:
                self._stats.clear()
            stats["pending"] = len(self.pending)
        looked_up = stats["hits"] + stats["misses"]
        stats["hit_ratio"] = stats["hits"] / looked_up if looked_up else 0.0
        return stats

    def invalidate_soon(self, tables: Iterable[str]) -> None:
        """Invalidate ``tables`` from sync code (engine events).

        The sync cache invalidates at once; the async one (process memory aside, bumped at
        once) is bypassed until it is applied, on the running event loop or by its next call.
        A call of the database's functions writes what the map at hand says (unread: all).

        Args:
            tables: The names of the tables written.
        """
        names = list(tables)
        if any(map(is_call, names)):  # the map at hand: an engine event reads no catalog
            resolved = self.catalog.resolve(names)
            names = sorted(resolved) if resolved is not None else [ALL]
        if not self.is_async:
            self.invalidate(names)  # type: ignore[attr-defined]
            return
        if not self.shared:
            self.backend.bump(self.token_names(names))
            self.count("invalidations", count_tables(names))
            if not self.replicated:  # else bumped again below,
                return  # with the commit's WAL position, for the replicas (cache.versions)
        self.pending.add(names)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.invalidate(()))  # type: ignore[attr-defined]
        _background.add(task)
        task.add_done_callback(_background.discard)

    # -- failures ----------------------------------------------------------------------------
    def failed(self, what: str, error: BaseException) -> None:
        """Count a backend failure and log it, at most once per ``warn_interval``."""
        self.count("errors")
        now = monotonic()
        if now - self._last_warning >= self.warn_interval:
            self._last_warning = now
            log.warning(
                "query cache %s failed (%s: %s); the cache is bypassed meanwhile",
                what,
                type(error).__name__,
                error,
            )

    # -- decisions -------------------------------------------------------------------------
    def tables_of(self, statement: Any, tables: Iterable[str] | None) -> tuple[str, ...]:
        """The tables an entry for ``statement`` depends on.

        Args:
            statement: The statement to cache.
            tables: Tables declared by the caller (required for text statements).

        Returns:
            The sorted table names, ``*`` among them.

        Raises:
            UncacheableStatementError: A write, or SQL text (`opaque_sql`) without ``tables``.
        """
        return entry_tables(statement_tables(statement, tables))

    def bypass_reason(
        self,
        session: Session | None,
        tables: tuple[str, ...],
        statement: Any = None,
        key: str = "",
    ) -> str | None:
        """Why a read must go to the database (`dalkit.cache.bypass`).

        Args:
            session: The ORM session reading (None: the live transaction's, if any).
            tables: The tables the read depends on.
            statement: The statement, checked for row locks.
            key: Its key, unkeyable when a bound value has no stable text.

        Returns:
            The reason (``pending invalidation``, ``unkeyable value``, ``no tenant``, ``row
            locks``, ``row security``, ``function``, ``snapshot isolation``, ``own write``), or
            None when the cache may serve the read.
        """
        return bypass.bypass_reason(self, session, tables, statement, key)

    def may_store(self, session: Session | None) -> bool:
        """False when the query's snapshot may predate the tokens read (SQLite keeps the
        snapshot of the transaction's first read), or its entities carry unflushed changes."""
        return bypass.may_store(self, session)

    def live_session(self) -> Session | None:
        """The ORM session of the live dalkit transaction, if any."""
        return bypass.live_session()

    def ttl_of(self, ttl: float | None) -> float:
        """The seconds an entry is kept: ``ttl``, or the default when None.

        Raises:
            CacheConfigurationError: ``ttl`` is not a positive number of seconds.
        """
        if ttl is None:
            return self.default_ttl
        _check_ttl(ttl, "ttl")
        return float(ttl)

    def describe(
        self, statement: Any, params: Any, tables: Iterable[Any] | None
    ) -> tuple[str, tuple[str, ...]]:
        """The key of a read (per tenant, for tenant-scoped tables) and the tables its entry
        depends on, remembered per statement shape: finding them walks the statement.

        Args:
            statement: The statement to cache.
            params: Bound parameters passed apart from the statement.
            tables: Tables declared by the caller.

        Returns:
            The key, and the tables (see [`tables_of`][dalkit.cache.core.CacheCore.tables_of]).

        Raises:
            CacheConfigurationError: The cache is not bound to a database yet.
            UncacheableStatementError: See ``tables_of``.
        """
        if self.keys is None:
            self.key_of(statement, params)  # raises: not bound
        assert self.keys is not None
        key, shape = self.keys.key_and_shape(statement, params)
        names = self._shape_tables.get(shape) if shape is not None and not tables else None
        if names is None:
            names = self.tables_of(statement, tables)
            if shape is not None and not tables:
                if len(self._shape_tables) >= 2000:
                    self._shape_tables.clear()
                self._shape_tables[shape] = names
        return key + (tenant_part(names) or ""), names  # no tenant: bypassed, see bypass_reason

    def key_of(self, statement: Any, params: Any) -> str:
        """The key of ``statement`` with ``params``.

        Raises:
            CacheConfigurationError: The cache is not bound to a database yet.
        """
        if self.keys is None:
            raise CacheConfigurationError(
                "this cache is not bound to a database: Database(..., cache=cache) or "
                "dalkit.cache.install(db, cache)"
            )
        return self.keys.key(statement, params)

    @property
    def shared(self) -> bool:
        """Whether the backend is shared between processes (entries stored pickled)."""
        return bool(getattr(self.backend, "shared", True))

    # -- flights ---------------------------------------------------------------------------
    def join_or_lead(self, key: str, tokens: Tokens) -> tuple[Flight, bool]:
        """Join the flight for ``key``, or start one.

        Args:
            key: The missed entry's key.
            tokens: The tokens the caller read: only a flight that read the same ones is
                joined (its result is as fresh as the caller's would be).

        Returns:
            The flight, and whether this caller leads it (runs the query and lands it).
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and flight.tokens == tokens:
                return flight, False
            flight = Flight(tokens)
            self._flights[key] = flight
            return flight, True

    def land(self, key: str, flight: Flight, payload: Any) -> None:
        """End the flight for ``key``: its waiters get ``payload`` (None: run your own)."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.finish(payload)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r}, default_ttl={self.default_ttl})"


# the async cache's invalidations scheduled from engine events, kept until they ran
_background: set[asyncio.Task[None]] = set()


def _check_ttl(ttl: float, name: str) -> None:
    """Refuse a TTL that is not a positive, finite number of seconds: NaN and infinity passed a
    ``<= 0`` check, then the memory backend kept their entries for ever and Redis refused every
    one (an error counted and logged at each miss)."""
    if not ttl > 0 or not math.isfinite(ttl):
        raise CacheConfigurationError(f"{name} must be a positive number of seconds, not {ttl}")
