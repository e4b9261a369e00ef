"""Deferred BEGIN on PostgreSQL at READ COMMITTED: a transaction that only reads sends neither
BEGIN nor COMMIT, so a read-only request costs one round trip per query.

Why this is safe. At READ COMMITTED each statement takes a new snapshot, inside a transaction
block or not, so a plain read sees the same rows whether or not a BEGIN came before it. The
connection runs in autocommit mode until the first statement that is not a plain SELECT (a
write, a locking read such as ``SELECT ... FOR UPDATE``, a SELECT calling a function other than
the built-in ones that only read, such as your own ``archive_orders()``, ``set_config(...,
true)``, ``nextval()`` or ``pg_notify()``, a SAVEPOINT, DDL, ``SET``, a text holding a second
statement) or that needs a transaction block to mean what it says (a SELECT reading the
transaction's clock, ``now()``, ``CURRENT_TIMESTAMP`` or the ``'now'`` of a timestamp's text,
written in the SQL or bound, which would otherwise answer each statement's own time; a
server-side cursor, ``stream_results`` or ``yield_per``, whose
``DECLARE`` PostgreSQL refuses outside one). Just before that statement the transaction begins
(``BEGIN``, or ``BEGIN READ ONLY`` for a read-only transaction, so the server still refuses its
writes), and from there on it is an ordinary transaction: atomic, committed or rolled back as a
whole. A plain BEGIN is the driver's own: its autocommit, switched on for the reads, is
switched off before that statement.

What it does not cover. Reads before the first write take no table lock that lasts until the
end. A function with side effects that the text does not show (a view calling one) runs in
autocommit. ``now()`` answers the time of the BEGIN, which is that of the first statement that
needed one, not of the first read. SQL sent on the driver's own connection
(``session.connection().connection.cursor()``) after a plain read and before any other
statement runs in the driver's autocommit too: send the transaction's first write through
SQLAlchemy, or begin at once (``isolation="REPEATABLE READ"``). Never used at REPEATABLE READ
or SERIALIZABLE, whose snapshot is taken at the first statement and must cover every later one,
nor when the server's default isolation is not READ COMMITTED (the choice is made by the
runner, see `deferrable()`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dalkit.engine.sql_calls import only_reads
from dalkit.engine.sql_literals import mask_strings
from dalkit.engine.statement_hooks import hooks_for, serves_lean
from dalkit.transaction.options import TransactionOptions

log = logging.getLogger("dalkit.transaction")

__all__ = [
    "DEFERRED_BEGIN_OPTION",
    "checks_commit",
    "deferrable",
    "execution_options",
    "install",
    "is_plain_read",
    "nothing_to_commit",
    "runs_before_begin",
]

#: Execution option carrying the statement that opens the transaction when it is needed.
DEFERRED_BEGIN_OPTION = "dalkit_deferred_begin"
_BEGUN = "dalkit.begun"  # in the connection record's info: a BEGIN was sent and is open
_BY_DRIVER = "driver"  # _BEGUN's value when the driver sent the BEGIN (autocommit off)
_AUTOCOMMIT = "dalkit.autocommit"  # in the record's info: we switched the driver's autocommit on
# row locks, SELECT INTO, and transaction-scoped advisory locks (held until the transaction
# ends, so released at once without one)
_LOCKING = re.compile(
    r"\bFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b|\bINTO\b|advisory_xact_lock",
    re.I,
)
# the transaction's clock: now() and CURRENT_TIMESTAMP (and the rest of the family) answer the
# time the transaction began, the same for each of its statements. Run before the BEGIN, each
# call would answer its own statement's time
_CLOCK = re.compile(
    r"\b(?:now|transaction_timestamp)\s*\(|\bcurrent_(?:timestamp|date|time)\b|\blocaltime",
    re.I,
)
# PostgreSQL's special timestamp input 'now' (any case, spaces around it) is the transaction's
# start time too: in the SQL text ('now'::timestamptz, timestamptz 'now') or bound as a value
_NOW_LITERAL = re.compile(r"'\s*now\s*'", re.I)
_PLAIN_READS_KEPT = 4096  # statements come from SQLAlchemy's compiled cache: a bounded set
_plain_reads: dict[str, bool] = {}
_before_begin: dict[str, bool] = {}


def is_plain_read(statement: str) -> bool:
    """A single SELECT that neither locks rows nor creates a table, nor calls a function that
    may act (`dalkit.engine.sql_calls`): it writes nothing."""
    known = _plain_reads.get(statement)
    if known is None:
        head = statement.lstrip()[:6].upper()
        known = (
            head == "SELECT"
            and _LOCKING.search(statement) is None
            and not _more_than_one(statement)
            and only_reads(statement)
        )
        if len(_plain_reads) >= _PLAIN_READS_KEPT:
            _plain_reads.clear()
        _plain_reads[statement] = known
    return known


def runs_before_begin(statement: str) -> bool:
    """A plain read (`is_plain_read`) that does not read the transaction's clock: it may run
    before a deferred BEGIN and see what it would have seen after one."""
    known = _before_begin.get(statement)
    if known is None:
        known = (
            is_plain_read(statement)
            and _CLOCK.search(mask_strings(statement)) is None
            and _NOW_LITERAL.search(statement) is None
        )
        if len(_before_begin) >= _PLAIN_READS_KEPT:
            _before_begin.clear()
        _before_begin[statement] = known
    return known


def _binds_now(parameters: Any) -> bool:
    """Whether a value bound is the text ``'now'``, which PostgreSQL reads as the transaction's
    start time where it takes it for a timestamp (``CAST(:p AS TIMESTAMP)``, ``at < :p``)."""
    for values in parameters:
        for value in values.values() if type(values) is dict else values:
            if type(value) is str and len(value) < 16 and value.strip().lower() == "now":
                return True
    return False


def _more_than_one(statement: str) -> bool:
    # "SELECT 1; DELETE ...": the driver runs both, and the second must not run in autocommit.
    # A ";" in a literal or a comment also counts: that only begins the transaction at once
    return ";" in mask_strings(statement).rstrip().rstrip(";")


def deferrable(engine: Engine, options: TransactionOptions) -> bool:
    """Whether a transaction with ``options`` on ``engine`` may defer its BEGIN."""
    if engine.dialect.name != "postgresql" or options.autocommit:
        return False
    if options.isolation not in (None, "READ COMMITTED"):
        return False
    # known after the first connection; until then, take no chance with a server whose
    # default_transaction_isolation was changed
    return getattr(engine.dialect, "default_isolation_level", None) == "READ COMMITTED"


def execution_options(options: TransactionOptions) -> dict[str, Any]:
    """The bind options of a deferred transaction: the statement that opens it when needed.

    No ``isolation_level="AUTOCOMMIT"``: that SQLAlchemy characteristic is applied by an engine
    event on every checkout and undone on every checkin, and one engine event makes every
    connection dispatch all of them (see dalkit.engine.statement_hooks). The driver's autocommit
    is switched by `install()`'s statement hook instead, only when a plain read needs it.
    """
    begin = "BEGIN READ ONLY" if options.read_only else "BEGIN"
    return {DEFERRED_BEGIN_OPTION: begin}


def install(engine: Engine) -> None:
    """Run a deferred transaction's plain reads in the driver's autocommit mode and open the
    transaction before its first other statement; for PostgreSQL engines (the sync engine
    under an AsyncEngine).

    The driver opens it when it can: with autocommit switched off, psycopg and asyncpg's
    adapter send their own BEGIN before the statement (on psycopg the one-row insert of
    bench/peers took 545 -> 513 us of CPU against a BEGIN of ours through a cursor), and end
    it with their own commit() and rollback(). A ``BEGIN READ ONLY`` is sent by us, in
    autocommit, and ended by a COMMIT or ROLLBACK of ours: SQLAlchemy calls ``do_commit`` and
    ``do_rollback`` for every COMMIT, ROLLBACK and pool reset, and translates their errors.

    Args:
        engine: A PostgreSQL engine; nothing happens for other databases or a second call.
    """
    if engine.dialect.name != "postgresql" or getattr(engine.dialect, "_dalkit_deferred", False):
        return
    dialect: Any = engine.dialect

    def begin_if_needed(cursor: Any, statement: str, context: Any) -> None:
        begin = context.execution_options.get(DEFERRED_BEGIN_OPTION)
        if begin is None:
            return
        connection = context.root_connection.connection
        info = connection.info
        if info.get(_BEGUN):
            return
        driver = connection.dbapi_connection
        # a server-side cursor (stream_results, yield_per) is a DECLARE, which PostgreSQL only
        # runs in a transaction block
        if (
            runs_before_begin(statement)
            and not context._is_server_side
            and not _binds_now(context.parameters)
        ):
            if not info.get(_AUTOCOMMIT):
                if _driver_in_transaction(driver):
                    # the transaction's code wrote through the raw driver, which began: the
                    # rest runs in that transaction, ended by the driver's commit or rollback
                    info[_BEGUN] = _BY_DRIVER
                    return
                driver.autocommit = True
                info[_AUTOCOMMIT] = True
            return
        if begin == "BEGIN":
            if info.pop(_AUTOCOMMIT, None) and driver.autocommit:
                driver.autocommit = False  # the driver begins before this statement
            info[_BEGUN] = _BY_DRIVER
            return
        if not info.get(_AUTOCOMMIT):
            driver.autocommit = True
            info[_AUTOCOMMIT] = True
        # on the statement's own cursor: a failure here is handled (translated, a lost
        # connection invalidated) like a failure of the statement itself. Not on a server-side
        # one, which would send DECLARE ... CURSOR FOR BEGIN READ ONLY: a cursor of its own
        if context._is_server_side:
            _send(driver, begin)
        else:
            cursor.execute(begin)
        info[_BEGUN] = True

    # it reads only what a lean read's stand-in context gives (dalkit.query.lean_read)
    hooks_for(dialect).add_before(serves_lean(begin_if_needed))
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        if _take_begun(dbapi_connection) is True:
            _send(dbapi_connection, "COMMIT")
        else:  # the driver's own, or not deferred: it knows what it began
            commit(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        if _take_begun(dbapi_connection) is True:
            _send(dbapi_connection, "ROLLBACK")
        else:
            rollback(dbapi_connection)

    dialect.do_commit = do_commit
    dialect.do_rollback = do_rollback
    dialect._dalkit_deferred = True

    @event.listens_for(engine.pool, "checkin")
    def _autocommit_off(dbapi_connection: Any, record: Any) -> None:
        # a pooled connection idles as the driver made it, as every other user expects:
        # autocommit off (after SQLAlchemy's reset, which ended any transaction)
        if record.info.pop(_AUTOCOMMIT, None) and dbapi_connection is not None:
            try:
                dbapi_connection.autocommit = False
            except Exception:
                log.debug("could not switch autocommit off; closing the connection", exc_info=True)
                record.invalidate()


def nothing_to_commit(session: Any) -> bool:
    """Whether committing ``session`` (a Session or an AsyncSession) would send nothing and run
    nothing: every connection it holds deferred its BEGIN and never sent it (each of its
    statements was a plain read in autocommit), its changes are flushed, and no
    ``before_commit`` / ``after_commit`` listener waits (the cache's invalidation, the eager
    load report, the user's) but the checks marked by `checks_commit`, which it runs (one may
    raise). Closing the session then ends the transaction the same way for the server and for
    the caller, without SQLAlchemy's commit machinery: the greenlet switch, the session and
    connection state changes and their events. That is 6% of the CPU of an async read-only
    ``get`` (the get by id of bench/peers: 425 -> 388 us of CPU per request).
    """
    sync = getattr(session, "sync_session", session)
    transaction = sync._transaction
    # nothing ran at all when there is no transaction: an identity-map or cache hit
    for connection, *_ in transaction._connections.values() if transaction is not None else ():
        if connection.closed or connection.invalidated:
            return False  # the full path raises what it should
        if connection.get_execution_options().get(DEFERRED_BEGIN_OPTION) is None:
            return False  # an ordinary transaction: its BEGIN went with the first statement
        info = connection.info
        if info.get(_BEGUN) or not info.get(_AUTOCOMMIT):
            # begun, or used without a statement of SQLAlchemy's (the raw driver): the
            # driver may hold a transaction of its own, which only a commit ends right
            return False
    # checked last: a write transaction has already answered above
    if not sync._is_clean():
        return False
    after_commit, before_commit = _commit_listeners(sync)
    if after_commit:
        return False
    checks = list(before_commit)
    if not all(getattr(check, _CHECKS_COMMIT, False) for check in checks):
        return False
    for check in checks:  # they may refuse the commit: here, as the full path would
        check(sync)
    return True


# SQLAlchemy's per-class registry of the listener lists that a session with no listener of its
# own sees: its dispatcher, built on first use, takes its attributes from there
_CLASS_LISTENERS: Any = getattr(type(Session.dispatch), "_empty_listener_reg", {})


def _commit_listeners(sync: Session) -> tuple[Any, Any]:
    """The ``after_commit`` and ``before_commit`` listeners ``sync`` dispatches to, read from
    SQLAlchemy's per-class registry when the session has no dispatcher of its own (no listener
    on the session itself, none used yet): an empty ``db.transaction()`` took 17.8 -> 14.4 us
    of CPU sync, 27.7 -> 24.3 async (/work/prof26/scope6/ab3.py, 21 interleaved rounds) for a
    session that may never dispatch anything (its close skipped, see `dalkit.transaction.ended`).
    """
    dispatch = sync.__dict__.get("dispatch")
    if dispatch is None:
        shared = _CLASS_LISTENERS.get(type(sync))
        if shared is not None and "after_commit" in shared and "before_commit" in shared:
            return shared["after_commit"], shared["before_commit"]
        dispatch = sync.dispatch
    return dispatch.after_commit, dispatch.before_commit


_CHECKS_COMMIT = "_dalkit_checks_commit"


def checks_commit(listener: Any) -> Any:
    """Mark a ``before_commit`` listener that only checks the session and may raise, sending
    and changing nothing: a read-only transaction's commit still takes the short way of
    `nothing_to_commit`, which calls it there. Any other ``before_commit`` listener makes the
    commit take SQLAlchemy's full path.

    Args:
        listener: The listener, called with the Session.

    Returns:
        The listener, marked.
    """
    setattr(listener, _CHECKS_COMMIT, True)
    return listener


def _driver_in_transaction(driver: Any) -> bool:
    """Whether the driver connection is inside a transaction block (psycopg's status, or that of
    the asyncpg connection under SQLAlchemy's adapter)."""
    status = getattr(getattr(driver, "info", None), "transaction_status", None)
    if status is not None:
        return bool(status != 0)  # psycopg.pq.TransactionStatus.IDLE
    inner = getattr(driver, "_connection", None)
    return bool(inner is not None and inner.is_in_transaction())


def _take_begun(dbapi_connection: Any) -> object:
    """How the deferred transaction of ``dbapi_connection`` began, forgotten as it ends: True
    (a BEGIN of ours), `_BY_DRIVER`, or None (it did not, or it was not deferred)."""
    try:
        info = dbapi_connection.info
    except (AttributeError, NotImplementedError):  # a bare or ad-hoc connection: never deferred
        return None
    return info.pop(_BEGUN, None)


def _send(dbapi_connection: Any, statement: str) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
