"""One statement's entry in the slow-query log, read from its execution context (the isolation
level, the compiled parameter names, the line of application code), and whether an error it
raised was a lost connection: what the observer's statement hooks hand on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, ExecutionContext

from dalkit.observe._source import caller_location, format_location
from dalkit.observe.querylog import SlowQueryLog

__all__ = ["is_disconnect", "log_slow"]


def log_slow(
    slow_log: SlowQueryLog,
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    duration: float,
    error: str | None = None,
) -> None:
    """Log one statement that took at least the log's threshold.

    Args:
        slow_log: The log.
        conn: The connection that ran it.
        cursor: Its cursor (its ``rowcount``), or None when it failed.
        statement: The statement.
        parameters: Its parameters, masked by the log.
        context: Its execution context.
        duration: The seconds it took (until it raised, when it failed).
        error: The class of the error it raised, when it failed.
    """
    compiled = getattr(context, "compiled", None)
    names = getattr(compiled, "positiontup", None)
    options = context.execution_options if context is not None else {}
    isolation = options.get("isolation_level")
    if isolation is None:
        try:
            isolation = conn.default_isolation_level
        except Exception:  # a broken connection must not hide the slow query
            isolation = None
    slow_log.emit(
        statement,
        parameters,
        duration,
        positional_names=list(names) if names else None,
        location=format_location(caller_location()),
        isolation=isolation,
        rows=cursor.rowcount if cursor is not None else -1,
        error=error,
    )


def is_disconnect(conn: Connection, cursor: Any, error: BaseException) -> bool:
    """Whether the dialect takes ``error`` for a lost connection, as SQLAlchemy asks it just
    after the hooks (its ``is_disconnect``, for the driver's errors only).

    Args:
        conn: The connection that ran the statement.
        cursor: Its cursor.
        error: What the statement raised.

    Returns:
        True for a lost connection.
    """
    dialect = conn.dialect
    if not isinstance(error, dialect.loaded_dbapi.Error):
        return False
    try:
        dbapi_connection = conn.connection.dbapi_connection
        return bool(dialect.is_disconnect(error, dbapi_connection, cursor))
    except Exception:  # an invalidated connection: none to ask about
        return False
