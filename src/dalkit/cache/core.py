"""What the sync and async caches share without I/O: configuration, statistics, pending
invalidations, the decision to bypass, single-flight bookkeeping and result (de)serialising."""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
import weakref
from collections import Counter
from collections.abc import Iterable
from time import monotonic
from typing import Any

from sqlalchemy.engine import FrozenResult, Result
from sqlalchemy.orm import Session
from sqlalchemy.orm.loading import merge_frozen_result
from sqlalchemy.sql.expression import TextClause, UpdateBase
from sqlalchemy.sql.selectable import TextualSelect

from dalkit.cache.errors import CacheConfigurationError, UncacheableStatementError
from dalkit.cache.keys import KeyBuilder
from dalkit.cache.tables import ALL, tables_read
from dalkit.cache.versions import Tokens, entry_tables
from dalkit.transaction.scope import current_scope

__all__ = ["WRITTEN", "CacheCore", "Flight", "cache_for", "sync_session"]

log = logging.getLogger("dalkit.cache")

#: session.info key of the tables a session's open transaction has written
WRITTEN = "dalkit.cache.written"
_SNAPSHOT_LEVELS = frozenset({"REPEATABLE READ", "SERIALIZABLE"})
_STAT_NAMES = ("hits", "misses", "sets", "invalidations", "bypasses", "errors")

# pool -> cache: how a repository (which only has a session) finds its database's cache
_CACHES: weakref.WeakKeyDictionary[Any, CacheCore] = weakref.WeakKeyDictionary()


def sync_session(session: Any) -> Session:
    """The ORM Session behind ``session`` (itself, or an AsyncSession's ``sync_session``)."""
    inner = getattr(session, "sync_session", session)
    if not isinstance(inner, Session):
        raise TypeError(f"expected a Session or AsyncSession, got {type(session).__name__}")
    return inner


def cache_for(session: Any) -> CacheCore | None:
    """The cache installed on the database ``session`` is bound to, if any."""
    bind = sync_session(session).get_bind()
    return _CACHES.get(getattr(bind, "pool", None) or bind.engine.pool)


class Flight:
    """One query in progress for a key: callers that read the same tokens wait for it
    instead of running the query again (a stampede on a cold key costs one query)."""

    __slots__ = ("done", "payload", "tokens", "waiter")

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.payload: Any = None
        self.done = threading.Event()
        self.waiter: Any = None  # the asyncio future of the async cache


class CacheCore:
    """Configuration and bookkeeping of one query cache; see QueryCache / AsyncQueryCache."""

    is_async = False

    def __init__(
        self,
        backend: Any,
        *,
        default_ttl: float = 60.0,
        serve_snapshot_reads: bool = False,
        retry_interval: float = 0.5,
        warn_interval: float = 30.0,
        database_id: str | None = None,
    ) -> None:
        if default_ttl <= 0:
            raise CacheConfigurationError(f"default_ttl must be positive, not {default_ttl}")
        self.backend = backend
        self.default_ttl = float(default_ttl)
        #: serve and fill the cache at REPEATABLE READ / SERIALIZABLE too (off: a cached
        #: result may be newer than the transaction's snapshot)
        self.serve_snapshot_reads = serve_snapshot_reads
        #: what tells this database's entries and tokens from another's in a shared backend;
        #: by default derived from the URL (user, host, port, database; never the password or
        #: driver), so every process must spell the URL alike or pass the same ``database_id``
        self.database_id = database_id
        self.namespace = str(getattr(backend, "prefix", "dalkit:cache"))
        self.retry_interval = retry_interval
        self.warn_interval = warn_interval
        self.database: Any = None
        self.keys: KeyBuilder | None = None
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._last_retry = 0.0
        self._last_warning = -float("inf")
        self._snapshot_per_transaction = False
        self._flights: dict[str, Flight] = {}
        self._shape_tables: dict[Any, tuple[str, ...]] = {}

    # -- binding ---------------------------------------------------------------------------
    def _bind(self, database: Any, sync_engine: Any) -> None:
        if self.database is not None:
            raise CacheConfigurationError("this cache is already bound to a database")
        self.database = database
        if self.database_id is None:
            url = sync_engine.url
            ident = (
                f"{url.get_backend_name()}://{url.username}@{url.host}:{url.port}/{url.database}"
            )
            if not self.shared:
                ident += f"#{id(sync_engine)}"  # process memory: this engine alone
            self.database_id = hashlib.blake2b(ident.encode(), digest_size=5).hexdigest()
        self.namespace = f"{self.namespace}:{self.database_id}"
        self.keys = KeyBuilder(sync_engine.dialect, self.namespace)
        self._snapshot_per_transaction = sync_engine.dialect.name == "sqlite"
        _CACHES[sync_engine.pool] = self

    def token_names(self, tables: Iterable[str]) -> list[str]:
        """The backend's names for the tokens of ``tables`` of this database."""
        prefix = f"{self.database_id}/" if self.database_id else ""
        return [prefix + table for table in tables]

    # -- statistics ------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def get_stats(self) -> dict[str, Any]:
        """hits, misses, sets, invalidations, bypasses, errors, hit_ratio and pending."""
        return self._snapshot(reset=False)

    def pop_stats(self) -> dict[str, Any]:
        """Like :meth:`get_stats`, then start the counters over."""
        return self._snapshot(reset=True)

    def _snapshot(self, reset: bool) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = {name: self._stats[name] for name in _STAT_NAMES}
            if reset:
                self._stats.clear()
            stats["pending"] = len(self._pending)
        looked_up = stats["hits"] + stats["misses"]
        stats["hit_ratio"] = stats["hits"] / looked_up if looked_up else 0.0
        return stats

    def invalidate_soon(self, tables: Iterable[str]) -> None:
        """Invalidate ``tables`` from sync code (engine events); the twins define it."""
        raise NotImplementedError

    # -- failures and pending invalidations --------------------------------------------------
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

    def add_pending(self, tables: Iterable[str]) -> None:
        with self._lock:
            self._pending.update(tables)

    def take_pending(self, tables: Iterable[str] = ()) -> list[str]:
        """The tables to bump now: ``tables`` and every invalidation still pending."""
        with self._lock:
            names = self._pending | set(tables)
            self._pending = set()
        return sorted(names)

    def retry_due(self) -> bool:
        """Whether pending invalidations should be tried again now (rate-limited)."""
        if not self._pending:
            return False
        now = monotonic()
        if now - self._last_retry < self.retry_interval:
            return False
        self._last_retry = now
        return True

    # -- decisions -------------------------------------------------------------------------
    def tables_of(self, statement: Any, tables: Iterable[str] | None) -> tuple[str, ...]:
        """The tables an entry for ``statement`` depends on; refuses what cannot be known."""
        if isinstance(statement, UpdateBase):
            raise UncacheableStatementError("only reads can be cached, not INSERT/UPDATE/DELETE")
        declared = [
            str(getattr(t, "name", t)) if not isinstance(t, str) else t for t in tables or ()
        ]
        if isinstance(statement, TextClause | TextualSelect) and not declared:
            raise UncacheableStatementError(
                "a text statement must declare the tables it reads: cached(session, statement, "
                "tables=['users', ...])"
            )
        return entry_tables({*tables_read(statement), *declared})

    def bypass_reason(
        self, session: Session | None, tables: tuple[str, ...], statement: Any = None
    ) -> str | None:
        """Why this read must go to the database, or None when the cache may serve it."""
        if self._pending:
            return "pending invalidation"
        if getattr(statement, "_for_update_arg", None) is not None:
            return "row locks"  # SELECT ... FOR UPDATE must reach the rows it locks
        scope = current_scope()
        live = None if scope is None else scope.live()
        isolation = "" if live is None else (live.options.isolation or "").upper()
        if isolation in _SNAPSHOT_LEVELS and not self.serve_snapshot_reads:
            return "snapshot isolation"
        sessions = [session] if session is not None else []
        if live is not None and session is None:
            sessions.append(sync_session(live.session))
        for candidate in sessions:
            written = candidate.info.get(WRITTEN)
            if written and (ALL in written or not written.isdisjoint(tables)):
                return "own write"
        return None

    def may_store(self, session: Session | None) -> bool:
        """False when the query's snapshot may predate the tokens read (SQLite keeps the
        snapshot of the transaction's first read)."""
        return not (
            self._snapshot_per_transaction and session is not None and session.in_transaction()
        )

    def ttl_of(self, ttl: float | None) -> float:
        if ttl is None:
            return self.default_ttl
        if ttl <= 0:
            raise CacheConfigurationError(f"ttl must be positive, not {ttl}")
        return float(ttl)

    def describe(
        self, statement: Any, params: Any, tables: Iterable[Any] | None
    ) -> tuple[str, tuple[str, ...]]:
        """The key of ``statement`` with ``params``, and the tables its entry depends on
        (remembered per statement shape: finding them walks the whole statement)."""
        if self.keys is None:
            self.key_of(statement, params)  # raises: not bound
        assert self.keys is not None
        key, shape = self.keys.key_and_shape(statement, params)
        if shape is None or tables:
            return key, self.tables_of(statement, tables)
        names = self._shape_tables.get(shape)
        if names is None:
            if len(self._shape_tables) >= 2000:
                self._shape_tables.clear()
            names = self._shape_tables[shape] = self.tables_of(statement, None)
        return key, names

    def key_of(self, statement: Any, params: Any) -> str:
        if self.keys is None:
            raise CacheConfigurationError(
                "this cache is not bound to a database: Database(..., cache=cache) or "
                "dalkit.cache.install(db, cache)"
            )
        return self.keys.key(statement, params)

    @property
    def shared(self) -> bool:
        return bool(getattr(self.backend, "shared", True))

    # -- flights ---------------------------------------------------------------------------
    def join_or_lead(self, key: str, tokens: Tokens) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether this caller leads it (runs the query)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and flight.tokens == tokens:
                return flight, False
            flight = Flight(tokens)
            self._flights[key] = flight
            return flight, True

    def land(self, key: str, flight: Flight, payload: Any) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.payload = payload
        flight.done.set()


def freeze(result: Result[Any], shared: bool) -> tuple[FrozenResult[Any], Any]:
    """The result, buffered, and what to store: its pickle for a shared backend; for process
    memory an unpickled copy, detached from the session that loaded it (whose later changes
    must never reach the cache) and served without unpickling."""
    frozen = result.freeze()
    payload = pickle.dumps(frozen, protocol=pickle.HIGHEST_PROTOCOL)
    return frozen, payload if shared else pickle.loads(payload)


def thaw(session: Session, statement: Any, payload: Any) -> Result[Any]:
    """A cached result as a live one; its entities are merged into ``session`` without a
    query, so they behave like entities it loaded (changing one flushes an UPDATE)."""
    frozen: FrozenResult[Any] = pickle.loads(payload) if isinstance(payload, bytes) else payload
    if statement is not None and statement._propagate_attrs.get("compile_state_plugin") == "orm":
        merged: FrozenResult[Any] = merge_frozen_result(  # type: ignore[no-untyped-call]
            session, statement, frozen, load=False
        )
        return merged()
    return frozen()
