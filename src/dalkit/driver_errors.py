"""The one place where driver errors (psycopg, asyncpg, sqlite3) become dalkit's own: by SQLSTATE
or SQLite result code, `translate_dbapi_error()` for what SQLAlchemy wraps and
`translate_connect_error()` for the plain ``OSError`` asyncpg raises while connecting and
`translate_bind_error()` for the bare ``OverflowError`` sqlite3 raises binding a parameter."""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import unquote

import sqlalchemy.exc

from dalkit.driver_messages import safe_text, server_fields
from dalkit.errors import (
    CheckViolationError,
    ConnectionFailedError,
    ConnectionLostError,
    DalkitError,
    DatabaseBusyError,
    DatabaseError,
    DeadlockError,
    ForeignKeyViolationError,
    IntegrityError,
    LockNotAvailableError,
    NotNullViolationError,
    ReadOnlyTransactionError,
    SerializationError,
    StatementTimeoutError,
    UniqueViolationError,
)

__all__ = [
    "error_class",
    "is_sqlite_busy",
    "translate_bind_error",
    "translate_connect_error",
    "translate_dbapi_error",
]


_BY_SQLSTATE: dict[str, type[DatabaseError]] = {
    "23505": UniqueViolationError,
    "23503": ForeignKeyViolationError,
    "23514": CheckViolationError,
    "23502": NotNullViolationError,
    "40001": SerializationError,
    "40P01": DeadlockError,
    "57014": StatementTimeoutError,
    "55P03": LockNotAvailableError,  # lock_not_available: NOWAIT, lock_timeout
    "25006": ReadOnlyTransactionError,  # read_only_sql_transaction, on a standby too
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


def is_sqlite_busy(exc: BaseException) -> bool:
    """Whether a raw sqlite3 error (or one wrapping it) says the file is locked by another
    connection: the errors that `translate_dbapi_error()` makes a `DatabaseBusyError`."""
    errors = _driver_errors(exc)
    code = _sqlite_code(errors)
    if code is not None:
        return _BY_SQLITE_CODE.get(code) is DatabaseBusyError
    return any("database is locked" in str(err) for err in errors)


def translate_dbapi_error(
    exc: sqlalchemy.exc.DBAPIError,
    *,
    is_disconnect: bool = False,
    on_connect: bool = False,
    sqlite_file: str | None = None,
) -> DatabaseError:
    """Map a SQLAlchemy-wrapped driver error onto dalkit's tree, by SQLSTATE or SQLite code.

    The message keeps the driver's words and names but drops the SQL parameters and the values
    the server quotes (`dalkit.driver_messages`), which may hold secrets; the driver's error,
    with all of them, is the ``__cause__``. SQLite's bare "unable to open database file" names
    the file (``sqlite_file``, its URL's database) and why it could not be opened.
    """
    errors = _driver_errors(exc.orig)
    sqlstate = _sqlstate(errors)
    if sqlite_file and _sqlite_code(errors) == 14:  # SQLITE_CANTOPEN
        return ConnectionFailedError(_cannot_open(sqlite_file))
    cls = _by_code(errors, sqlstate)
    if cls is None or (cls is ConnectionLostError and on_connect):
        if on_connect:
            cls = ConnectionFailedError
        elif is_disconnect:
            cls = ConnectionLostError
        elif isinstance(exc, sqlalchemy.exc.IntegrityError):
            cls = IntegrityError
        else:
            cls = DatabaseError
    fields = next(filter(None, map(server_fields, errors)), None)
    return cls(
        _driver_message(errors),
        sqlstate=sqlstate,
        constraint=_constraint(errors),
        table=fields.table if fields is not None else None,
        column=fields.column if fields is not None else None,
    )


def _cannot_open(sqlite_file: str) -> str:
    """What SQLite's "unable to open database file" means for ``sqlite_file``, and what to do."""
    path = os.path.abspath(unquote(sqlite_file.removeprefix("file:").split("?", 1)[0]))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        return f"unable to open the SQLite database file {path}: it is a directory"
    if not os.path.isdir(folder):
        return (
            f"unable to open the SQLite database file {path}: its directory {folder} does not"
            " exist (SQLite creates the file, not its directory: create the directory first)"
        )
    return (
        f"unable to open the SQLite database file {path}: check that this process may read and"
        f" write it and create files in {folder}"
    )


def _by_code(errors: list[Any], sqlstate: str | None) -> type[DatabaseError] | None:
    """The class the SQLSTATE or SQLite result code of ``errors`` names, if any."""
    cls: type[DatabaseError] | None = _BY_SQLSTATE.get(sqlstate) if sqlstate else None
    if cls is None:
        code = _sqlite_code(errors)
        cls = _BY_SQLITE_CODE.get(code) if code is not None else None
        if cls is None and code is not None and code & 0xFF == 19:  # any other SQLITE_CONSTRAINT
            cls = IntegrityError
        if cls is None and code is not None and code & 0xFF == 8:  # SQLITE_READONLY and kin
            cls = ReadOnlyTransactionError
    if cls is None and errors and "database is locked" in str(errors[0]):
        cls = DatabaseBusyError
    return cls


# PEP 249's exception classes, by name: what every driver's errors derive from
_PEP_249 = frozenset(
    (
        "InterfaceError",
        "DatabaseError",
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    )
)


def error_class(exc: BaseException, *, is_disconnect: bool = False) -> str:
    """The name of the dalkit error class ``exc`` is, or that `translate_dbapi_error()` makes
    of it: a label from a small fixed set, never the message (which may hold values).

    Args:
        exc: What a statement raised: the driver's own error (raw or wrapped by SQLAlchemy or
            an async adapter), a dalkit error, or anything else.
        is_disconnect: The dialect took it for a lost connection.

    Returns:
        A dalkit error class name (``UniqueViolationError``, ``StatementTimeoutError``,
        ``ConnectionLostError``, ``DatabaseError``...), ``Cancelled`` for a cancelled task or
        an interrupt, or ``OtherError`` for anything that is no database error.
    """
    if isinstance(exc, DalkitError):
        # a subclass of the caller's own is labelled as the dalkit class it extends
        return next(c.__name__ for c in type(exc).__mro__ if c.__module__.split(".")[0] == "dalkit")
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return "Cancelled"
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return type(translate_dbapi_error(exc, is_disconnect=is_disconnect)).__name__
    errors = _driver_errors(exc)
    sqlstate = _sqlstate(errors)
    cls = _by_code(errors, sqlstate)
    if cls is not None:
        return cls.__name__
    names = {c.__name__ for e in errors for c in type(e).__mro__ if c.__module__ != "builtins"}
    if is_disconnect:
        return ConnectionLostError.__name__
    # asyncpg's own errors (a COPY's) have a SQLSTATE but none of PEP 249's class names
    if "IntegrityError" in names or (sqlstate or "").startswith("23"):
        return IntegrityError.__name__
    if sqlstate or names & _PEP_249 or isinstance(exc, OverflowError):  # OverflowError: sqlite3
        return DatabaseError.__name__
    return "OtherError"


def translate_connect_error(exc: OSError) -> ConnectionFailedError:
    """A ConnectionFailedError for an ``OSError`` raised while opening a connection."""
    return ConnectionFailedError(f"could not connect to the server: {_driver_message([exc])}")


def translate_bind_error(exc: OverflowError | TypeError) -> DatabaseError:
    """A DatabaseError for a parameter the driver cannot bind: sqlite3 (and aiosqlite) raise a
    bare ``OverflowError`` for an integer past 64 bits, where PostgreSQL's drivers raise an
    error SQLAlchemy wraps (``bigint out of range``), which `translate_dbapi_error()` maps;
    psycopg a bare ``TypeError`` for a value its dumper cannot encode (``Object of type set is
    not JSON serializable``), where asyncpg and SQLite raise an error SQLAlchemy wraps."""
    return DatabaseError(_driver_message([exc]))


def _driver_message(errors: list[Any]) -> str:
    """The innermost driver error's own text, the values it quotes masked (`safe_text`):
    async adapters prefix theirs with a class repr (``<class 'asyncpg.exceptions.
    UniqueViolationError'>: ...``), and the exception type already says what kind of error it
    is."""
    for err in reversed(errors):
        text = safe_text(err) or str(err).strip()
        if text:
            return text
    return type(errors[0]).__name__ if errors else "unknown driver error"
