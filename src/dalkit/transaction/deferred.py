"""Deferred BEGIN on PostgreSQL at READ COMMITTED: a transaction that only reads sends neither
BEGIN nor COMMIT, so a read-only request costs one round trip per query.

Why this is safe. At READ COMMITTED each statement takes a new snapshot, inside a transaction
block or not, so a plain read sees the same rows whether or not a BEGIN came before it. The
connection runs in autocommit mode until the first statement that is not a plain SELECT (a
write, a locking read such as ``SELECT ... FOR UPDATE`` or ``pg_advisory_xact_lock()``, a
SAVEPOINT, DDL, ``SET``); just
before that statement the transaction begins (``BEGIN``, or ``BEGIN READ ONLY`` for a
read-only transaction, so the server still refuses its writes), and from there on it is an
ordinary transaction: atomic, committed or rolled back as a whole.

What it does not cover. A function with side effects called from a plain SELECT before any
write runs in autocommit; reads before the first write take no table lock that lasts until the
end. Never used at REPEATABLE READ or SERIALIZABLE, whose snapshot is taken at the first
statement and must cover every later one, nor when the server's default isolation is not READ
COMMITTED (the choice is made by the runner, see `deferrable()`).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from dalkit.transaction.options import TransactionOptions

__all__ = ["DEFERRED_BEGIN_OPTION", "deferrable", "execution_options", "install", "is_plain_read"]

#: Execution option carrying the statement that opens the transaction when it is needed.
DEFERRED_BEGIN_OPTION = "dalkit_deferred_begin"
_BEGUN = "dalkit.begun"  # in the connection record's info: a BEGIN was sent and is open
# row locks, SELECT INTO, and transaction-scoped advisory locks (held until the transaction
# ends, so released at once without one)
_LOCKING = re.compile(
    r"\bFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b|\bINTO\b|advisory_xact_lock",
    re.I,
)
_plain_reads: dict[str, bool] = {}
_PLAIN_READS_KEPT = 4096  # statements come from SQLAlchemy's compiled cache: a bounded set


def is_plain_read(statement: str) -> bool:
    """A SELECT that neither locks rows nor creates a table: it may run before BEGIN."""
    known = _plain_reads.get(statement)
    if known is None:
        head = statement.lstrip()[:6].upper()
        known = head == "SELECT" and _LOCKING.search(statement) is None
        if len(_plain_reads) >= _PLAIN_READS_KEPT:
            _plain_reads.clear()
        _plain_reads[statement] = known
    return known


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
    """The bind options of a deferred transaction: autocommit until the first write."""
    begin = "BEGIN READ ONLY" if options.read_only else "BEGIN"
    return {"isolation_level": "AUTOCOMMIT", DEFERRED_BEGIN_OPTION: begin}


def install(engine: Engine) -> None:
    """Send the deferred BEGIN before the first statement that needs it, and the COMMIT or
    ROLLBACK that ends it; for PostgreSQL engines (the sync engine under an AsyncEngine)."""
    if engine.dialect.name != "postgresql" or getattr(engine.dialect, "_dalkit_deferred", False):
        return
    dialect: Any = engine.dialect

    @event.listens_for(engine, "before_cursor_execute")
    def _begin_if_needed(
        connection: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        begin = connection.get_execution_options().get(DEFERRED_BEGIN_OPTION)
        if begin is None:
            return
        info = connection.info
        if info.get(_BEGUN) or is_plain_read(statement):
            return
        # on the statement's own cursor: a failure here is handled (translated, a lost
        # connection invalidated) like a failure of the statement itself
        cursor.execute(begin)
        info[_BEGUN] = True

    # The driver's own commit() and rollback() do nothing in autocommit mode (asyncpg's
    # adapter) or look at the server's status (psycopg): end a deferred transaction explicitly.
    # SQLAlchemy calls these for every COMMIT, ROLLBACK and pool reset, and translates errors.
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        if _take_begun(dbapi_connection):
            _send(dbapi_connection, "COMMIT")
        else:
            commit(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        if _take_begun(dbapi_connection):
            _send(dbapi_connection, "ROLLBACK")
        else:
            rollback(dbapi_connection)

    dialect.do_commit = do_commit
    dialect.do_rollback = do_rollback
    dialect._dalkit_deferred = True


def _take_begun(dbapi_connection: Any) -> bool:
    try:
        info = dbapi_connection.info
    except (AttributeError, NotImplementedError):  # a bare or ad-hoc connection: never deferred
        return False
    return bool(info.pop(_BEGUN, False))


def _send(dbapi_connection: Any, statement: str) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
