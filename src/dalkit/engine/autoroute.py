"""Plain reads of a default transaction routed to a replica (``route_reads="auto"``): the
Session whose ``get_bind()`` decides per statement, and the state of one session's routing.

Why this is safe. On PostgreSQL at READ COMMITTED, dalkit defers a default transaction's BEGIN
until its first statement that is not a plain read (see dalkit.transaction.deferred): until
then each read takes a snapshot of its own, so it may as well be taken on a replica that has
replayed this context's last commit (read-your-writes, see dalkit.engine.replicas).

What is routed. Only ``select()`` constructs (what repositories, lazy loads and the query cache
on a miss send) whose functions are all known not to write (``count``, ``lower``, ...): a text
statement or a function such as ``nextval()`` may write or be refused by a standby, so it stays
on the primary. From the first statement that is not such a read (a flush, a write, ``SELECT
... FOR UPDATE``, a text statement, ``merge()``, or ``session.connection()``, through which raw
writes and COPY go), every later statement of the session goes to the primary, so a transaction
reads its own writes; those later reads also overwrite (``populate_existing``) the entities the
replica loaded, so the identity map does not keep the replica's older rows. All routed reads of
one session go to the same replica (time never runs backwards inside a transaction), and its
connection runs in autocommit: the session's COMMIT or ROLLBACK gives it back.

What it does not cover. A read made before the first write may be up to ``max_replica_lag_s``
old for rows other requests wrote: a read-then-write that must not act on an older row locks
it (``FOR UPDATE``, which goes to the primary), checks a version column, or uses
``route_reads="read_only"``, as it would against concurrent writers on the primary.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import ClauseElement, Select, visitors
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ColumnClause, TextClause
from sqlalchemy.sql.functions import FunctionElement

from dalkit.engine.session import DalkitSession
from dalkit.engine.sql_calls import READ_ONLY_FUNCTIONS
from dalkit.engine.statement_hooks import WRITES_OPTION
from dalkit.transaction.deferred import DEFERRED_BEGIN_OPTION

__all__ = [
    "COMMIT_POSITION",
    "PRIMARY_POSITION",
    "PROBE",
    "REPLICA_OPTION",
    "ReadRouter",
    "RoutingSession",
    "install",
    "plain_select",
    "read_on_replica",
    "commit_position",
    "replica_of",
    "route_miss",
]

#: Execution option naming the replica (``host:port``) on the engines of replica reads.
REPLICA_OPTION = "dalkit_replica"
#: The primary's WAL position: past every commit that has returned (the insert position, since
#: the commit record may still sit in the WAL buffers with ``synchronous_commit=off``). Where
#: that points just past a page's (or segment's) header, the page's start: a replica replays up
#: to the end of the last record, and nothing comes after it until the next one is written
PRIMARY_POSITION = (
    "SELECT upper(to_hex(div(n, 4294967296)::bigint) || '/' || to_hex(mod(n, 4294967296)::bigint))"
    " FROM (SELECT p - CASE"
    " WHEN mod(p, pg_size_bytes(current_setting('wal_segment_size'))) = 40 THEN 40"
    " WHEN mod(p, current_setting('wal_block_size')::numeric) = 24 THEN 24 ELSE 0 END AS n"
    " FROM (SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS p) AS i) AS b"
)
#: Execution options of dalkit's own probes (the replica monitor's, the WAL positions read
#: after writes): ``dalkit.testing.count_queries`` does not count them.
#: ``dalkit_writes=()``: they write nothing, but call functions (``mod``, ``to_hex``,
#: ``current_setting``) that a query cache which has not read the catalog yet takes for calls
#: that may write (every monitor round invalidated the whole cache)
PROBE = {"dalkit_probe": True, WRITES_OPTION: ()}
#: ``scope.state`` key: the primary's position the router read after the scope's commit
COMMIT_POSITION = "dalkit.replicas.commit_position"
_ROUTER = "dalkit.replicas.router"  # session.info: the router (put there by the factory)
_STATE = "dalkit.replicas.plain_reads"  # session.info: this session's _PlainReads, or False
_plain_selects: dict[Any, bool] = {}
_PLAIN_SELECTS_KEPT = 4096  # statement shapes: a bounded set, as in SQLAlchemy's own cache


class ReadRouter(Protocol):
    """What a session needs from the router: a replica for its plain reads, or None."""

    def plain_read_bind(self) -> tuple[Engine, object] | None:
        """The replica's sync engine and the replica, or None for the primary."""
        ...

    def replayed(self, name: str) -> int:
        """The WAL position replica ``name`` was last seen to have replayed (0: unknown)."""
        ...

    def requiring(self, position: int) -> AbstractContextManager[None]:
        """A block inside which only replicas seen past ``position`` are chosen."""
        ...


class _PlainReads:
    """Where one session's plain reads go: undecided, a replica, or (for good) the primary."""

    __slots__ = ("bind", "decided", "replica", "wrote")

    def __init__(self) -> None:
        self.decided = False
        self.bind: Engine | None = None  # the replica's (sync) engine once chosen
        self.replica: object = None
        self.wrote = False  # a statement other than a plain read was asked for: primary only


class RoutingSession(DalkitSession):
    """A Session that sends the plain reads of a deferred default transaction to a replica
    and everything else to its own bind, the primary (see the module's docstring)."""

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kw: Any,
    ) -> Engine | Connection:
        """The replica's engine for a plain read of a transaction that has not written yet;
        else what ``Session.get_bind()`` returns. Arguments are ``Session.get_bind()``'s."""
        state = self._plain_reads()
        if state is not None and bind is None and not state.wrote:
            if self.in_nested_transaction():
                # a savepoint is begun on each connection the session uses inside it, and an
                # autocommit connection to a standby cannot take one: savepoints mean writes
                state.wrote = True
            elif clause is None:
                if mapper is not None:  # a flush, or a connection asked for by a mapper
                    state.wrote = True
            elif plain_select(clause):
                routed = self._replica_bind(state)
                if routed is not None:
                    return routed
            else:
                state.wrote = True
        return super().get_bind(mapper, clause=clause, bind=bind, **kw)

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """``Session.connection()``, after which the session uses the primary only."""
        # a raw connection is how raw SQL, COPY and bulk writes are sent: primary from now on
        state = self._plain_reads()
        if state is not None:
            state.wrote = True
        return super().connection(*args, **kwargs)

    def merge(self, *args: Any, **kwargs: Any) -> Any:
        """``Session.merge()``, after which the session uses the primary only."""
        # merge() reads the row to decide between INSERT and UPDATE: that read must see the
        # primary, or a row the replica lacks would be inserted twice
        state = self._plain_reads()
        if state is not None:
            state.wrote = True
        return super().merge(*args, **kwargs)

    def _plain_reads(self) -> _PlainReads | None:
        state = self.info.get(_STATE)
        if state is None:
            # decided once per session: only a default transaction whose BEGIN is deferred
            bind = self.bind
            options = bind.get_execution_options() if bind is not None else {}
            deferred = options.get(DEFERRED_BEGIN_OPTION) == "BEGIN"
            state = _PlainReads() if deferred and _ROUTER in self.info else False
            self.info[_STATE] = state
        return state if isinstance(state, _PlainReads) else None

    def _replica_bind(self, state: _PlainReads) -> Engine | None:
        if not state.decided:
            state.decided = True
            router: ReadRouter = self.info[_ROUTER]
            chosen = router.plain_read_bind()
            if chosen is not None:
                state.bind, state.replica = chosen
        return state.bind


@event.listens_for(RoutingSession, "do_orm_execute")
def _reload_replica_rows(execute_state: ORMExecuteState) -> None:
    # an entity read on the replica keeps its loaded values in the identity map: once the
    # transaction writes (or is about to flush), reads on the primary must overwrite them
    session = execute_state.session
    state = session.info.get(_STATE)
    if not state or state.bind is None or not execute_state.is_select:
        return
    pending = bool(session.new or session.dirty or session.deleted)
    if pending and not (session.autoflush and execute_state.execution_options.get("autoflush", 1)):
        return  # reloading would overwrite changes that are not flushed first: keep them
    if state.wrote or pending:
        execute_state.update_execution_options(populate_existing=True)


def plain_select(clause: Any) -> bool:
    """Whether a statement may run on a replica.

    Args:
        clause: The statement a session is about to execute.

    Returns:
        True for a ``select()`` without row locks, text, DML or a function outside those known
        to only read; remembered per statement shape.
    """
    if not isinstance(clause, Select) or clause._for_update_arg is not None:
        return False
    cache_key = clause._generate_cache_key()  # memoized: SQLAlchemy's compiled cache uses it too
    if cache_key is None:
        return _only_reads(clause)
    known = _plain_selects.get(cache_key.key)
    if known is None:
        if len(_plain_selects) >= _PLAIN_SELECTS_KEPT:
            _plain_selects.clear()
        known = _plain_selects[cache_key.key] = _only_reads(clause)
    return known


def _only_reads(clause: ClauseElement) -> bool:
    for element in visitors.iterate(clause):
        if isinstance(element, TextClause | UpdateBase):
            return False
        if isinstance(element, ColumnClause) and element.is_literal and element.name != "*":
            return False
        if isinstance(element, FunctionElement):
            name = str(getattr(element, "name", "")).lower()
            if name not in READ_ONLY_FUNCTIONS:  # a standby runs these, and they write nothing
                return False
    return True


def install(factory: Any, router: ReadRouter) -> None:
    """Make a session factory build RoutingSessions.

    Args:
        factory: A sessionmaker or async_sessionmaker (changed in place).
        router: Where the sessions' plain reads are routed.
    """
    info = {**factory.kw.get("info", {}), _ROUTER: router}
    if hasattr(factory.class_, "sync_session_class"):  # AsyncSessions: their inner Session
        factory.configure(sync_session_class=RoutingSession, info=info)
    else:
        factory.class_ = RoutingSession
        factory.configure(info=info)


def replica_of(session: Any) -> object:
    """The replica a session's reads went to while nothing ran on the primary: a lost
    connection of such a transaction is the replica's, and it may run again elsewhere at once.

    Every statement of such a session so far was a plain read on that replica: any other goes
    to the primary and marks the session as written.

    Args:
        session: A Session or AsyncSession.

    Returns:
        The replica, or None (no routed read, or the session used the primary).
    """
    inner = getattr(session, "sync_session", session)
    state = inner.info.get(_STATE) if isinstance(inner, Session) else None
    if not state or state.wrote:
        return None
    return state.replica


def read_on_replica(session: Any) -> bool:
    """Whether a session's reads ran on a replica: a read-only transaction routed whole, or a
    default one whose plain reads were routed. What the query cache needs to know before it
    stores a result a lagging replica may have given (see docs/replicas.md).

    Args:
        session: A Session or AsyncSession.

    Returns:
        True when some statement of the session went, or goes, to a replica.
    """
    inner = getattr(session, "sync_session", session)
    if not isinstance(inner, Session):
        return False
    state = inner.info.get(_STATE)
    if state and state.bind is not None:
        return True
    bind = inner.bind
    return bind is not None and REPLICA_OPTION in bind.get_execution_options()


def route_miss(session: Any, needed: int | None) -> bool:
    """Route a query cache miss so that its result includes every commit that has returned,
    and say whether it may be stored.

    The cache stores a result under the version tokens read before its query (see
    dalkit.cache.versions); each token carries the WAL position of the commit that made it
    (``needed`` is the latest). A replica that has not replayed that far could give a result
    older than the tokens: the miss then runs on the primary, or on a replica the monitor has
    seen past ``needed``. The rest of the transaction follows, so its reads never go back in
    time.

    Args:
        session: The Session or AsyncSession about to run the miss.
        needed: The position the result must include; None when unknown (primary only).

    Returns:
        False when the session is bound to a replica as a whole (a read-only transaction)
        that is not known to have replayed ``needed``: the result is returned, not stored.
    """
    inner = getattr(session, "sync_session", session)
    if not isinstance(inner, Session):
        return True
    router: ReadRouter | None = inner.info.get(_ROUTER)
    if router is None:
        return True  # no replicas: the primary
    bind = inner.bind
    name = None if bind is None else bind.get_execution_options().get(REPLICA_OPTION)
    if name is not None:
        return needed is not None and router.replayed(name) >= needed
    if not isinstance(inner, RoutingSession):
        return True
    state = inner._plain_reads()
    if state is None or state.wrote:
        return True  # the primary
    if needed is None:
        state.wrote = True
    elif not state.decided:
        with router.requiring(needed):
            inner._replica_bind(state)
    elif state.bind is not None and getattr(state.replica, "replay_lsn", 0) < needed:
        state.wrote = True
    return True


def commit_position(scope: Any) -> int | None:
    """The primary's WAL position the router read after ``scope`` (or a transaction it ran
    inside) committed, so that the query cache need not read it again.

    Args:
        scope: A TransactionScope whose commit has happened.

    Returns:
        The position, or None when the router did not read one (no replicas, nothing it saw
        as a write, or the read failed).
    """
    for candidate in scope.ancestors():
        position: int | None = (candidate.state or {}).get(COMMIT_POSITION)
        if position is not None:
            return position
    return None
