"""Which tables a transaction writes, collected from every statement that reaches the
database (ORM flushes, bulk and Core DML, upserts, raw SQL, DDL), and when they are
invalidated: at commit, never on rollback.

One statement hook on the engine's dialect (dalkit.engine.statement_hooks) sees every write
path that goes through SQLAlchemy (a flush is a series of INSERT/UPDATE/DELETE statements, one
per table, association and inheritance tables included), so no write path can be forgotten.
Writes in a dalkit transaction are invalidated by an ``on_commit`` callback (after COMMIT
succeeded, before the transaction call returns; dropped with a rolled-back savepoint). Writes on
a connection outside dalkit's transactions (``engine.begin()``, a bare ``Session.commit()``, a
two-phase ``Session(twophase=True)``) are kept in the pool record's ``info`` and invalidated by
a transaction-end hook wrapping the dialect's ``do_commit`` (and ``do_commit_twophase``) just
after COMMIT (even a failed one: it may have been applied), or forgotten by its
``do_rollback``; on an AUTOCOMMIT connection, just after the statement. A two-phase transaction
prepared elsewhere and committed here (``commit_prepared(..., recover=True)``) invalidates
everything: what it wrote is unknown here.

An UPDATE or a DELETE of a table also bumps its `cascades_from` token, which the entries of the
tables whose foreign keys cascade from it in the database carry (dalkit.cache.catalog), so a
cascade no model declares is seen; the cascades the models declare (`dependents`) are bumped as
tables too. A raw UPDATE/DELETE of a table no model declares then invalidates it and what
cascades from it, not everything, on a database whose catalog the cache reads. A statement of
any kind that calls one of the database's functions writes what that function writes
(`CatalogMap.calls_written`; before the catalog is read, the calls, replaced at commit).

Why hooks and not engine events: one engine listener makes every connection dispatch about seven
events a transaction, read-only ones included. Why ``do_commit`` / ``do_rollback`` rather than
``commit`` / ``rollback`` listeners on the Connection that wrote: SQLAlchemy calls them for sync
and async engines alike (the asyncpg and aiosqlite adapters too), never for a savepoint (whose
rolled-back writes are still invalidated at the outer COMMIT: more than needed, never less), and
for the pool's reset at check-in, which forgets what a connection closed without COMMIT wrote;
and it runs after the COMMIT, where the guarantee needs the bump, with no listener to add at the
first write. The Session that owns a Connection is tagged on the Connection itself, whose life is
that one transaction, so nothing is left to clear at check-in.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import MetaData, Table, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Insert, TextClause

from dalkit.cache.bypass import SNAPSHOT, WRITTEN, sets_snapshot
from dalkit.cache.catalog_queries import catalog_query
from dalkit.cache.core import CacheCore, cache_for, sync_session
from dalkit.cache.reads import read_schemas
from dalkit.cache.tables import ALL, cascades_from, dependents, is_call, table_name, text_write
from dalkit.engine.schemas import created_through
from dalkit.engine.statement_hooks import WRITES_OPTION, hooks_for, serves_lean
from dalkit.query.dml_ctes import cte_writes
from dalkit.query.plain_entities import begin_neutral
from dalkit.transaction.scope import TransactionScope, current_scope

__all__ = ["WriteCapture", "note_write"]

_OWNER = "_dalkit_cache_owner"  # Connection attribute: weakref to the Session using it
_PENDING = "dalkit.cache.pending"  # connection.info: written outside a dalkit transaction
_CALLBACKS = "dalkit.cache.callbacks"  # scope.state: (callback, tables) registered
_session_listener_installed = False
_NOTHING: frozenset[str] = frozenset()
# DDL sent as text (what the views the cache knows depend on may have changed)
_DDL_TEXT = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(?:create|drop|alter)\b", re.I | re.S)


class WriteCapture:
    """The hooks of one engine, reporting the tables written to one cache.

    Args:
        cache: The cache to report to.
        engine: The (sync) engine whose statements to watch.
    """

    def __init__(self, cache: CacheCore, engine: Engine) -> None:
        self.cache = cache
        # weakly: the capture lives on the dialect, which SQLAlchemy's statement caches keep
        self._engine = weakref.ref(engine)
        self._dialect = engine.dialect
        self._dependents: dict[Table, frozenset[str]] = {}
        self._written_schemas: weakref.WeakSet[MetaData] = weakref.WeakSet()
        # a raw write's target name -> the tables of that name in the schemas known then
        self._named: dict[str, tuple[Table, ...]] = {}
        self._named_in: set[MetaData] = set()
        # the dialect's catalog tells readers what cascades (dalkit.cache.catalog)
        self._catalog = catalog_query(engine.dialect.name) is not None

    def install(self) -> None:
        global _session_listener_installed
        hooks = hooks_for(self._dialect)
        # it reads what a lean read gives (dalkit.query.lean_read); a plain SELECT writes nothing
        hooks.add_after(serves_lean(self._after_execute))
        hooks.add_transaction_end(self._ended)
        if not _session_listener_installed:
            event.listen(Session, "after_begin", _tag_owner)
            event.listen(Session, "after_transaction_end", _forget_writes)
            _session_listener_installed = True

    # -- what a statement writes -------------------------------------------------------------
    def _after_execute(
        self, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        compiled = context.compiled
        text = compiled is None or isinstance(compiled.statement, TextClause)
        if text and sets_snapshot(statement):  # SET TRANSACTION ISOLATION LEVEL ... in SQL
            _mark_snapshot(context.root_connection)
        written = self.written(statement, context)
        calls = self.cache.catalog.calls_written(statement)  # functions called: what they write
        if calls and WRITES_OPTION not in context.execution_options and ALL not in (written or ()):
            written = written | calls if written else calls
        if written:
            if ALL in written and (context.isddl or _DDL_TEXT.match(statement)):
                self.cache.catalog.forget()  # a view, trigger, partition... may have changed
            self.record(context.root_connection, written)

    def written(self, sql: str, context: Any) -> frozenset[str] | None:
        declared = context.execution_options.get(WRITES_OPTION)
        if declared is not None:  # what the statement's author says it writes (none: ())
            names = {table_name(table) for table in declared}  # and what cascades, if it may
            return frozenset({*names, *(cascades_from(name) for name in names)})
        compiled = context.compiled
        if context.isddl:
            # a temporary table is the connection's own: no other reader can have cached it
            # (the audit's before-image of a large UPDATE makes and drops one)
            return None if _temporary(compiled) else frozenset({ALL})
        if context.isinsert or context.isupdate or context.isdelete:
            table = getattr(getattr(compiled, "statement", None), "table", None)
            return self._dml_written(table, context.isinsert) | self._cte_writes(compiled)
        if compiled is not None and not isinstance(compiled.statement, TextClause):
            return self._cte_writes(compiled) or None  # a compiled SELECT
        written = text_write(sql)
        if written is None:
            return None
        targets, cascades = written
        if not cascades:
            procedure = next((name for name in targets if is_call(name)), None)  # a CALL
            return targets if procedure is None else self.cache.catalog.procedure_writes(procedure)
        found: set[str] = set(targets)
        for name in targets:
            found.add(cascades_from(name))  # what cascades from it, in the database's catalog
            tables = self._tables_named(name)
            if not tables and not self._catalog:
                # no schema this process knows has the table, nor does a catalog say what
                # cascades from it: unknown, and might be cached (here or in another process)
                return frozenset({ALL})
            for table in tables:
                found |= self._with_dependents(table)
        return frozenset(found)

    def _cte_writes(self, compiled: Any) -> frozenset[str]:
        """The tables written by INSERT/UPDATE/DELETE in the CTEs of a compiled statement."""
        writes = cte_writes(compiled)
        if not writes:  # the usual case: one attribute look-up per statement
            return _NOTHING
        return frozenset().union(
            *(self._dml_written(w.table, isinstance(w, Insert)) for w in writes)
        )

    def _dml_written(self, table: Any, insert: bool) -> frozenset[str]:
        """What an INSERT (its table) or an UPDATE/DELETE (and what cascades from it) of
        ``table`` writes; everything when it is not a Table (no foreign keys to follow)."""
        if not isinstance(table, Table):
            return frozenset({ALL})
        return frozenset({table_name(table)}) if insert else self._with_dependents(table)

    def _with_dependents(self, table: Table) -> frozenset[str]:
        names = self._dependents.get(table)
        if names is None:
            changed = {table_name(table), *dependents(table)}
            names = frozenset({*changed, *(cascades_from(name) for name in changed)})
            self._dependents[table] = names
            self._written_schemas.add(table.metadata)
        return names

    def _tables_named(self, name: str) -> tuple[Table, ...]:
        """The tables called ``name`` (by `table_name`) in every schema this process has read
        through the cache, written, or created through this engine."""
        schemas = {
            *read_schemas(),
            *self._written_schemas,
            *(created_through(self._engine()) or ()),
        }
        if schemas != self._named_in:
            self._named, self._named_in = {}, schemas
        tables = self._named.get(name)
        if tables is None:
            tables = tuple(
                table
                for schema in schemas
                for table in schema.tables.values()
                if table_name(table) == name
            )
            self._named[name] = tables
        return tables

    # -- where it goes -----------------------------------------------------------------------
    def record(self, conn: Connection, tables: frozenset[str]) -> None:
        owner_ref = getattr(conn, _OWNER, None)
        owner = owner_ref() if owner_ref is not None else None
        if owner is not None:
            written = owner.info.get(WRITTEN)
            if written is None:
                owner.info[WRITTEN] = set(tables)
            else:
                written.update(tables)
            scope = _live_scope()
            if scope is not None:
                session = scope.session  # an AsyncSession's sync_session, or itself
                if getattr(session, "sync_session", session) is owner:
                    register(self.cache, scope, tables)
                    return
        if conn._is_autocommit_isolation():  # committed as it ran: no COMMIT will follow
            self.cache.invalidate_soon(tables)
            return
        pending = conn.info.get(_PENDING)
        if pending is None:
            conn.info[_PENDING] = set(tables)
        else:
            pending.update(tables)

    def _ended(self, dbapi_connection: Any, committed: bool, foreign: bool) -> None:
        if foreign and committed:
            # a two-phase transaction prepared by another connection or process, committed
            # here (recovery): what it wrote was never seen here
            self.cache.invalidate_soon((ALL,))
        try:
            info = dbapi_connection.info
        except (AttributeError, NotImplementedError):  # a bare or ad-hoc connection
            return
        pending = info.pop(_PENDING, None)
        if pending and committed:
            self.cache.invalidate_soon(pending)


def _temporary(compiled: Any) -> bool:
    """Whether a compiled DDL statement creates or drops a temporary table."""
    element = getattr(getattr(compiled, "statement", None), "element", None)
    if not isinstance(element, Table):
        return False
    return any(str(p).upper() in ("TEMPORARY", "TEMP") for p in element._prefixes)


def register(cache: CacheCore, scope: TransactionScope, tables: Iterable[str]) -> None:
    """Have ``scope`` invalidate ``tables`` once it committed.

    One callback a transaction: tables written later join the set of the last callback
    still alive, so a commit costs one backend round trip (one ``MSET``) however many
    tables it wrote. A callback registered in a savepoint that rolled back is gone from
    the scope, so its tables are registered again; a table joining a callback of an outer
    level is invalidated even if its own savepoint rolls back (more than needed, never
    less).

    Args:
        cache: The cache to invalidate.
        scope: The live transaction scope that wrote ``tables``.
        tables: The names of the tables written.
    """
    state = scope.state
    if state is None:
        state = scope.state = {}
    registered: list[tuple[Any, set[str]]] | None = state.get(_CALLBACKS)
    if registered is None:  # the transaction's first write: most write only once
        registered = state[_CALLBACKS] = []
        new = set(tables)
    else:
        alive = scope.callbacks or ()
        registered[:] = [entry for entry in registered if entry[0] in alive]
        new = set(tables)
        for _cb, names in registered:
            new -= names
        if not new:
            return
        if registered:
            registered[-1][1].update(new)  # read by its callback when the commit has happened
            return
    invalidate_tables = cache.invalidate  # type: ignore[attr-defined]
    # the scope only where its WAL position is needed (read replicas), and dropped once read:
    # the scope holds this callback, and a reference cycle would keep the transaction's session
    # alive until the garbage collector ran (a collection every 40 writes in cache_parts.py)
    replicas = cache.replicated
    committed: list[TransactionScope] = [scope] if replicas else []

    # a closure, not a partial of a bound method: the sync scope's coroutine check of a plain
    # function reads its code flags, of a partial it builds a signature (about 5 us a write)
    def invalidate() -> Any:
        return invalidate_tables(new, committed.pop() if committed else None)

    # ranked: ahead of the other callbacks of its savepoint level, and of the level it joins
    # when that savepoint is released. Then an ``on_commit`` callback reading what the commit
    # wrote through the cache sees it; behind them, such a read was served the entry the
    # commit replaced, and a callback that failed or was cancelled stopped the invalidation for
    # good (entries served in every process until their TTL). The replica router's callback
    # (rank 2) stays ahead of it: it reads the WAL position the new tokens carry.
    registered.append((scope.add(invalidate, on_commit=True, robust=True, rank=1), new))


def note_write(session: Any, table: Any) -> None:
    """Tell the cache that ``session``'s transaction wrote ``table`` by a path SQLAlchemy
    does not see (COPY, a driver connection): invalidated when that transaction commits, with
    the tables whose foreign keys cascade from it in the database (an UPDATE or a DELETE).

    Args:
        session: The Session or AsyncSession whose transaction wrote.
        table: The table written: a Table or its name.

    Examples:
        ``note_write(session, "events")`` after a ``COPY events FROM STDIN``.
    """
    cache = cache_for(session)
    if cache is None:
        return
    name = table_name(table)
    names = frozenset({name, cascades_from(name)})  # a driver's UPDATE/DELETE may cascade
    inner = sync_session(session)
    inner.info.setdefault(WRITTEN, set()).update(names)
    scope = _live_scope()
    if scope is not None and sync_session(scope.session) is inner:
        register(cache, scope, names)
        return
    # outside dalkit's transactions: before and after this session's commit
    cache.invalidate_soon(names)
    event.listen(inner, "after_commit", lambda _s: cache.invalidate_soon(names), once=True)


def _live_scope() -> TransactionScope | None:
    scope = current_scope()
    if scope is None or not scope.finished:
        return scope
    return scope.live()


@begin_neutral  # a read before the session began has no connection of the session's to tag
def _tag_owner(session: Session, transaction: Any, connection: Connection) -> None:
    setattr(connection, _OWNER, weakref.ref(session))


def _forget_writes(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(WRITTEN, None)
        session.info.pop(SNAPSHOT, None)


def _mark_snapshot(connection: Connection) -> None:
    # the rest of the session's transaction reads at a snapshot level: bypassed (and not
    # stored) as one asked for with db.transaction(isolation=...) is
    owner_ref = getattr(connection, _OWNER, None)
    owner = owner_ref() if owner_ref is not None else None
    if owner is not None:
        owner.info[SNAPSHOT] = True
