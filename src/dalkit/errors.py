"""dalkit's one error tree (driver errors are translated into it by `dalkit.driver_errors`).

```text
DalkitError
├── ConfigurationError          bad URL, unknown driver, missing extra, bad option or variable
│   └── EventLoopError          an AsyncDatabase used from a second event loop while the
│                               loop its connections belong to still runs (another thread)
├── PoolTimeoutError            no pooled connection became free within pool_timeout
├── PgBouncerError              (engine.pgbouncer) what transaction pooling cannot do
├── TransactionError            a transaction could not be run as asked (propagation, SQLite)
│   ├── CommitOutcomeUnknownError   the connection broke during COMMIT: committed or not?
│   ├── RetryExhaustedError     retryable failures outlasted the RetryPolicy; .attempts
│   ├── NoActiveTransactionError    current_session(), on_commit() outside a transaction
│   ├── TransactionAbortedError     the session used again after its flush failed (or a
│   │                           session.rollback() inside its block) rolled it back
│   ├── TransactionUsageError   (also a TypeError) the API of the other colour: a plain def
│   │                           for AsyncDatabase, async with on Database, with on
│   │                           AsyncDatabase, a generator function
│   ├── UnitOfWorkError         a unit of work used out of turn (after commit, rollback...)
│   │   └── UncollectedEventsError  (outbox.uncollected) a commit that would drop events
│   ├── ResponseStartedError    (integrations.errors) a request's session used too late
│   └── RequestCommitError      (integrations.errors) a request's transaction did not commit
├── DatabaseError               a driver error, its values masked; .sqlstate, .constraint,
│   │                           .table, .column when known
│   ├── IntegrityError
│   │   ├── UniqueViolationError
│   │   ├── ForeignKeyViolationError
│   │   ├── CheckViolationError
│   │   └── NotNullViolationError
│   ├── TransientError          the same work may succeed if run again
│   │   ├── SerializationError
│   │   ├── DeadlockError
│   │   └── DatabaseBusyError
│   ├── ConnectionFailedError   could not open a connection (refused, unknown host, password)
│   ├── ConnectionLostError     an open connection broke
│   ├── StatementTimeoutError
│   ├── LockNotAvailableError   a lock not taken: FOR UPDATE NOWAIT, or past lock_timeout
│   └── ReadOnlyTransactionError    a write where only reads are allowed (read_only=True,
│                                   a standby, a read-only SQLite file)
├── NotFoundError               Repository.get found no row with that primary key
├── QueryInputError             user-supplied query input names something not allowed;
│   │                           .name, .allowed
│   ├── InvalidFilterError      unknown or disallowed filter field, operator or value
│   │   └── InputTooLongError   (query.errors) filter or search text past max_input_length
│   ├── InvalidSortError        unknown or disallowed sort field or direction
│   ├── InvalidCursorError      a pagination cursor that is forged, stale or malformed
│   └── InvalidQueryError       QueryBuilder/load/write names, unbound raw SQL
├── BulkLoadError               bulk_insert/bulk_update met a row it cannot write; .row_index
├── OutboxError                 an outbox message cannot be stored or read back
│   └── PublishError            a publisher could not deliver a message; retried later
├── CodecError                  (_codec, also a ValueError) JSON that is not the type asked
├── CacheError                  (cache.errors) the query cache's errors
│   ├── UncacheableStatementError   cached() given a statement whose tables are unknown
│   ├── UncacheableCallError        a memoized call with an argument keyed only by its address
│   └── CacheConfigurationError     a cache set up wrongly (also a ConfigurationError)
├── UnauditedWriteError         (audit.errors) a write to an audited model that is not recorded
├── AuditActorError             (audit.errors, also a ValueError) an actor longer than the log keeps
├── SoftDeletedRowError         (query.soft_delete) a write that would touch a deleted row
├── TenantError                 (query.tenant) what tenant scoping forbids
│   ├── TenantRequiredError     a tenant-scoped model used outside dalkit.tenant(...)
│   ├── TenantMismatchError     a write to a row of another tenant
│   └── UnscopedStatementError  raw SQL or Core on a connection naming a tenant-scoped table
├── NPlusOneError               (observe.errors) an N+1 pattern under nplusone="raise"
├── QueryBudgetExceededError    (observe.errors) a query_budget() block ran over
├── ServerStartError        (testing, also a RuntimeError) a test server that cannot start:
│                           binaries missing, port taken, no answer in time
└── MigrationError              (migrations.errors) a migration command cannot do as asked
    ├── MigrationCheckError     (migrations.checks) a built-in migration check failed
    ├── BackupError             a backup cannot be taken or restored
    ├── MigrationFailedError    a revision failed part-way
    ├── MigrationLockError      another run held the migration lock too long
    ├── SchemaDriftError        the models and the migrated database differ
    └── UnsafeMigrationError    a pending revision has unsafe operations
```

Classes marked with a module live there, in the package that raises them; the rest are here.
Every translated error is raised ``from`` the driver's own exception (psycopg, asyncpg, sqlite3);
its message is the driver's own words, without the driver's class name in front and without
the values the server quotes (`dalkit.driver_messages`), which are masked in the text of that
exception too, as a printed traceback shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "BulkLoadError",
    "CheckViolationError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionLostError",
    "DalkitError",
    "DatabaseBusyError",
    "DatabaseError",
    "DeadlockError",
    "EventLoopError",
    "ForeignKeyViolationError",
    "IntegrityError",
    "InvalidCursorError",
    "InvalidFilterError",
    "InvalidQueryError",
    "InvalidSortError",
    "NoActiveTransactionError",
    "NotFoundError",
    "NotNullViolationError",
    "OutboxError",
    "PoolTimeoutError",
    "PublishError",
    "QueryInputError",
    "ReadOnlyTransactionError",
    "RetryExhaustedError",
    "SerializationError",
    "StatementTimeoutError",
    "LockNotAvailableError",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionUsageError",
    "TransientError",
    "UniqueViolationError",
    "UnitOfWorkError",
]


class DalkitError(Exception):
    """Base of every error dalkit raises."""


class ConfigurationError(DalkitError):
    """Raised when a URL, driver, extra or option cannot work; the message names the fix."""


class EventLoopError(ConfigurationError):
    """Raised when an AsyncDatabase is used from an event loop while the loop that opened its
    pooled connections still runs in another thread: one AsyncDatabase per running loop.

    A loop that has stopped or closed (``asyncio.run()`` again, pytest-asyncio's loop per test)
    raises nothing: its connections are let go of and the new loop gets a pool of its own.
    """


class PoolTimeoutError(DalkitError):
    """Raised when no pooled connection became free within ``pool_timeout``.

    Args:
        pool_size: The pool's size.
        max_overflow: Its overflow.
        waited_ms: How long the checkout waited.
    """

    def __init__(self, pool_size: int, max_overflow: int, waited_ms: float) -> None:
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.waited_ms = waited_ms
        super().__init__(
            f"no connection available: pool_size={pool_size}, max_overflow={max_overflow}, "
            f"waited {waited_ms:.0f} ms; raise pool_size or hold connections for less time"
        )


class DatabaseError(DalkitError):
    """Raised for a driver error that no narrower class below describes.

    Args:
        message: The driver's message, the values it quotes masked (`dalkit.driver_messages`).
        sqlstate: The SQLSTATE code, when the driver gives one.
        constraint: The constraint that was broken, when known.
        table: The table the server names (PostgreSQL), when it names one.
        column: The column the server names (PostgreSQL: a NOT NULL's), when it names one.
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        table: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.table = table
        self.column = column


class IntegrityError(DatabaseError):
    """Raised when a write breaks a constraint."""


class UniqueViolationError(IntegrityError):
    """Raised when a write duplicates a unique or primary key (SQLSTATE 23505)."""


class ForeignKeyViolationError(IntegrityError):
    """Raised when a write references a missing row or orphans one (SQLSTATE 23503)."""


class CheckViolationError(IntegrityError):
    """Raised when a write fails a CHECK constraint (SQLSTATE 23514)."""


class NotNullViolationError(IntegrityError):
    """Raised when a write leaves a NOT NULL column empty (SQLSTATE 23502)."""


class TransientError(DatabaseError):
    """Raised for a failure that running the same transaction again may not meet."""


class SerializationError(TransientError):
    """Raised when the database aborted a transaction to keep it serializable (SQLSTATE 40001)."""


class DeadlockError(TransientError):
    """Raised when the database broke a deadlock by aborting this transaction (SQLSTATE 40P01)."""


class DatabaseBusyError(TransientError):
    """Raised when SQLite stayed locked by another writer past ``busy_timeout``."""


class ConnectionFailedError(DatabaseError):
    """Raised when a new connection could not be opened (server down, bad password, bad host)."""


class ConnectionLostError(DatabaseError):
    """Raised when an open connection broke while in use."""


class StatementTimeoutError(DatabaseError):
    """Raised when a statement ran past statement_timeout_ms or was cancelled (SQLSTATE 57014)."""


class LockNotAvailableError(DatabaseError):
    """Raised when a lock could not be taken (SQLSTATE 55P03): ``FOR UPDATE NOWAIT`` (or a
    ``LOCK ... NOWAIT``) met a row or table another transaction holds, or a wait ran past the
    server's ``lock_timeout``. Not retried: NOWAIT and lock_timeout ask not to wait."""


class ReadOnlyTransactionError(DatabaseError):
    """Raised when a statement would write where only reads are allowed: in a
    ``read_only=True`` transaction, on a PostgreSQL standby (both SQLSTATE 25006), or in SQLite
    under ``query_only`` or on a file it may not write (SQLITE_READONLY). Nothing was written,
    and running the same work again would be refused again, so it is not retried."""


class TransactionError(DalkitError):
    """Raised when a transaction cannot be run as asked, such as joining one with another
    isolation level, or a SQLite ``requires_new`` writer that would wait on its own caller."""


class CommitOutcomeUnknownError(TransactionError):
    """Raised when the connection broke while COMMIT was under way: the work may or may not
    have been committed, so it is never retried; check the database before running it again."""


class RetryExhaustedError(TransactionError):
    """Raised when a transaction kept failing with retryable errors until its RetryPolicy ran
    out of attempts or time; the last error is the cause.

    Args:
        attempts: How many attempts ran.
        last_error: The error of the last one.
    """

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        self.attempts = attempts
        noun = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"transaction failed after {attempts} {noun}; last error: "
            f"{type(last_error).__name__}: {last_error}"
        )


class NoActiveTransactionError(TransactionError):
    """Raised by current_session(), on_commit() and on_rollback() outside a dalkit transaction."""


class TransactionAbortedError(TransactionError):
    """Raised when a session is used again (a statement, a flush, the end of its block) after
    a flush of its transaction failed, which rolled the whole transaction back: nothing more
    can run in it. Raised ``from`` the flush's error; a transaction function is retried when
    that error is one that is retried. To carry on after an expected failure, make the write
    in a savepoint (``propagation="nested"``), whose failure rolls back only its own work.
    Raised too when the session is used after ``session.rollback()`` inside the block or
    function that owns the transaction rolled it back, and when its connection was lost in a
    savepoint whose ConnectionLostError was caught (raised ``from`` a ConnectionLostError)."""


class TransactionUsageError(TransactionError, TypeError):
    """Raised when a transaction is asked of the API of the other colour: a plain ``with`` on
    an AsyncDatabase's ``transaction()``, ``session()``, unit of work or the database itself
    (``async with`` on a Database's), before anything is opened; a plain function (one that
    returns nothing to await) given to an AsyncDatabase, when it returns, its work rolled
    back; a coroutine function given to a Database, a generator function given to either.
    Also a TypeError, which these mistakes raised before."""


class NotFoundError(DalkitError):
    """Raised when ``Repository.get`` finds no row with the given primary key.

    Args:
        model: The model's name.
        ident: The primary key looked for (kept in ``.ident``).
        secret: The key is a sensitive column's (a reset token): the message does not show it.
    """

    def __init__(self, model: str, ident: Any, *, secret: bool = False) -> None:
        self.model = model
        self.ident = ident
        shown = "***" if secret else repr(ident)
        super().__init__(f"no {model} with primary key {shown}")


class QueryInputError(DalkitError):
    """Raised when query input (a field, operator, direction, page) is not allowed.

    An API can answer with a 400 that says how to fix the request.

    Args:
        message: What is wrong.
        name: The offending input.
        allowed: What would have been accepted.
    """

    def __init__(self, message: str, *, name: str, allowed: Iterable[str] = ()) -> None:
        self.name = name
        self.allowed: tuple[str, ...] = tuple(allowed)
        super().__init__(message)


class InvalidFilterError(QueryInputError):
    """Raised for an unknown or disallowed filter field or operator, or an unusable value."""


class InvalidSortError(QueryInputError):
    """Raised for an unknown or disallowed sort field, a bad direction or a repeated field."""


class InvalidCursorError(QueryInputError):
    """Raised for a pagination cursor that was forged, altered, malformed or made for another
    sort or model."""


class InvalidQueryError(QueryInputError):
    """Raised when a QueryBuilder, load path, write or raw SQL names a table, column,
    relationship, operator, aggregate or limit that is not allowed, or raw SQL is not bound."""


class BulkLoadError(DalkitError):
    """Raised when ``bulk_insert``/``bulk_update`` meets a row it cannot write.

    The database error is the cause.

    Args:
        message: What is wrong with the row.
        row_index: The row's position in the caller's rows, from 0.
        row: The row.
    """

    def __init__(self, message: str, *, row_index: int, row: Any) -> None:
        self.row_index = row_index
        self.row = row
        super().__init__(message)


class UnitOfWorkError(TransactionError):
    """Raised when a unit of work is used out of turn: committed twice, used after it ended,
    or rolled back on its own while it is part of a surrounding transaction."""


class OutboxError(DalkitError):
    """Raised when an event cannot go into the outbox or come out of it, such as an event type
    that is not registered (with that version)."""


class PublishError(OutboxError):
    """Raised by a publisher that could not deliver a message; the relay retries it later."""
