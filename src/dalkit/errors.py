"""dalkit's one error tree, and the one place where driver errors are translated into it.

```text
DalkitError
├── ConfigurationError          bad URL, unknown driver, missing extra, bad option or variable
├── PoolTimeoutError            no pooled connection became free within pool_timeout
├── PgBouncerError              (engine.pgbouncer) what transaction pooling cannot do
├── TransactionError            a transaction could not be run as asked (propagation, SQLite)
│   ├── CommitOutcomeUnknownError   the connection broke during COMMIT: committed or not?
│   ├── RetryExhaustedError     retryable failures outlasted the RetryPolicy; .attempts
│   ├── NoActiveTransactionError    current_session(), on_commit() outside a transaction
│   ├── UnitOfWorkError         a unit of work used out of turn (after commit, rollback...)
│   ├── ResponseStartedError    (integrations.errors) a request's session used too late
│   └── RequestCommitError      (integrations.errors) a request's transaction did not commit
├── DatabaseError               a driver error; .sqlstate, .constraint when known
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
│   └── StatementTimeoutError
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
│   └── CacheConfigurationError     a cache set up wrongly (also a ConfigurationError)
├── UnauditedWriteError         (audit.errors) a write to an audited model that is not recorded
├── SoftDeletedRowError         (query.soft_delete) a write that would touch a deleted row
├── TenantError                 (query.tenant) what tenant scoping forbids
│   ├── TenantRequiredError     a tenant-scoped model used outside dalkit.tenant(...)
│   └── TenantMismatchError     a write to a row of another tenant
├── NPlusOneError               (observe.errors) an N+1 pattern under nplusone="raise"
├── QueryBudgetExceededError    (observe.errors) a query_budget() block ran over
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
its message is the driver's own words, without the driver's class name in front. Two entry points:
`translate_dbapi_error()` for what SQLAlchemy wraps, `translate_connect_error()` for the
plain ``OSError`` (refused port, unknown host, timeout) that asyncpg raises while connecting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy.exc

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
    "RetryExhaustedError",
    "SerializationError",
    "StatementTimeoutError",
    "TransactionError",
    "TransientError",
    "UniqueViolationError",
    "UnitOfWorkError",
    "translate_connect_error",
    "translate_dbapi_error",
]


class DalkitError(Exception):
    """Base of every error dalkit raises."""


class ConfigurationError(DalkitError):
    """Raised when a URL, driver, extra or option cannot work; the message names the fix."""


class PoolTimeoutError(DalkitError):
    """Raised when no pooled connection became free within ``pool_timeout``."""

    def __init__(self, pool_size: int, max_overflow: int, waited_ms: float) -> None:
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.waited_ms = waited_ms
        super().__init__(
            f"no connection available: pool_size={pool_size}, max_overflow={max_overflow}, "
            f"waited {waited_ms:.0f} ms; raise pool_size or hold connections for less time"
        )


class DatabaseError(DalkitError):
    """Raised for a driver error that no narrower class below describes."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, constraint: str | None = None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint


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


class TransactionError(DalkitError):
    """Raised when a transaction cannot be run as asked, such as joining one with another
    isolation level, or a SQLite ``requires_new`` writer that would wait on its own caller."""


class CommitOutcomeUnknownError(TransactionError):
    """Raised when the connection broke while COMMIT was under way: the work may or may not
    have been committed, so it is never retried; check the database before running it again."""


class RetryExhaustedError(TransactionError):
    """Raised when a transaction kept failing with retryable errors until its RetryPolicy ran
    out of attempts or time; ``.attempts`` says how many ran, the last error is the cause."""

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        self.attempts = attempts
        noun = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"transaction failed after {attempts} {noun}; last error: "
            f"{type(last_error).__name__}: {last_error}"
        )


class NoActiveTransactionError(TransactionError):
    """Raised by current_session(), on_commit() and on_rollback() outside a dalkit transaction."""


class NotFoundError(DalkitError):
    """Raised when ``Repository.get`` finds no row with the given primary key."""

    def __init__(self, model: str, ident: Any) -> None:
        self.model = model
        self.ident = ident
        super().__init__(f"no {model} with primary key {ident!r}")


class QueryInputError(DalkitError):
    """Raised when query input (a field, operator, direction, page) is not allowed.

    ``name`` is the offending input and ``allowed`` what would have been accepted, so an API can
    answer with a 400 that says how to fix the request.
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

    ``row_index`` counts from 0 in the caller's rows; the database error is the cause.
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


_BY_SQLSTATE: dict[str, type[DatabaseError]] = {
    "23505": UniqueViolationError,
    "23503": ForeignKeyViolationError,
    "23514": CheckViolationError,
    "23502": NotNullViolationError,
    "40001": SerializationError,
    "40P01": DeadlockError,
    "57014": StatementTimeoutError,
    # admin shutdown, crash shutdown, cannot connect now: the server went away under us
    "57P01": ConnectionLostError,
    "57P02": ConnectionLostError,
    "57P03": ConnectionLostError,
    "28P01": ConnectionFailedError,
    "28000": ConnectionFailedError,
    "3D000": ConnectionFailedError,
}

# SQLite extended result codes (sqlite3.Error.sqlite_errorcode): see sqlite.org/rescode.html
_BY_SQLITE_CODE: dict[int, type[DatabaseError]] = {
    2067: UniqueViolationError,  # SQLITE_CONSTRAINT_UNIQUE
    1555: UniqueViolationError,  # SQLITE_CONSTRAINT_PRIMARYKEY
    787: ForeignKeyViolationError,  # SQLITE_CONSTRAINT_FOREIGNKEY
    275: CheckViolationError,  # SQLITE_CONSTRAINT_CHECK
    1299: NotNullViolationError,  # SQLITE_CONSTRAINT_NOTNULL
    5: DatabaseBusyError,  # SQLITE_BUSY
    517: DatabaseBusyError,  # SQLITE_BUSY_SNAPSHOT
    261: DatabaseBusyError,  # SQLITE_BUSY_RECOVERY
    6: DatabaseBusyError,  # SQLITE_LOCKED
    262: DatabaseBusyError,  # SQLITE_LOCKED_SHAREDCACHE
    14: ConnectionFailedError,  # SQLITE_CANTOPEN
}


def _driver_errors(exc: BaseException | None) -> list[Any]:
    """The driver error and its causes: async adapters keep the real driver error as cause."""
    chain: list[Any] = []
    while exc is not None and len(chain) < 4:
        chain.append(exc)
        exc = exc.__cause__
    return chain


def _sqlstate(errors: list[Any]) -> str | None:
    for err in errors:
        # psycopg: .sqlstate; asyncpg: .sqlstate; SQLAlchemy's asyncpg adapter: .pgcode
        code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def _constraint(errors: list[Any]) -> str | None:
    for err in errors:
        name = getattr(err, "constraint_name", None)  # asyncpg
        if name is None:
            diag = getattr(err, "diag", None)  # psycopg
            name = getattr(diag, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


def _sqlite_code(errors: list[Any]) -> int | None:
    for err in errors:
        code = getattr(err, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code
    return None


def translate_dbapi_error(
    exc: sqlalchemy.exc.DBAPIError, *, is_disconnect: bool = False, on_connect: bool = False
) -> DatabaseError:
    """Map a SQLAlchemy-wrapped driver error onto dalkit's tree, by SQLSTATE or SQLite code.

    The message keeps the driver's words but drops the SQL parameters, which may hold secrets.
    """
    errors = _driver_errors(exc.orig)
    sqlstate = _sqlstate(errors)
    cls: type[DatabaseError] | None = _BY_SQLSTATE.get(sqlstate) if sqlstate else None
    if cls is None:
        code = _sqlite_code(errors)
        cls = _BY_SQLITE_CODE.get(code) if code is not None else None
        if cls is None and code is not None and code & 0xFF == 19:  # any other SQLITE_CONSTRAINT
            cls = IntegrityError
    if cls is None and "database is locked" in str(exc.orig):
        cls = DatabaseBusyError
    if cls is None or (cls is ConnectionLostError and on_connect):
        if on_connect:
            cls = ConnectionFailedError
        elif is_disconnect:
            cls = ConnectionLostError
        elif isinstance(exc, sqlalchemy.exc.IntegrityError):
            cls = IntegrityError
        else:
            cls = DatabaseError
    return cls(_driver_message(errors), sqlstate=sqlstate, constraint=_constraint(errors))


def translate_connect_error(exc: OSError) -> ConnectionFailedError:
    """A ConnectionFailedError for an ``OSError`` raised while opening a connection."""
    return ConnectionFailedError(f"could not connect to the server: {_driver_message([exc])}")


def _driver_message(errors: list[Any]) -> str:
    """The innermost driver error's own text: async adapters prefix theirs with a class repr
    (``<class 'asyncpg.exceptions.UniqueViolationError'>: ...``), and the exception type
    already says what kind of error it is."""
    for err in reversed(errors):
        text = str(err).strip()
        if text:
            return text
    return type(errors[0]).__name__ if errors else "unknown driver error"
