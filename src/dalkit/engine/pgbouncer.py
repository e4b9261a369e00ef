"""Running behind PgBouncer in transaction pooling mode, and libpq-style multi-host URLs for
failover: the engine settings each needs and the session features each must refuse.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import URL

from dalkit.config import DatabaseConfig, InitHook, split_hosts
from dalkit.engine.build import resolve_url
from dalkit.errors import ConfigurationError, DalkitError

__all__ = [
    "PgBouncerError",
    "check_session_lock_allowed",
    "pgbouncer_async_config",
    "pgbouncer_config",
    "split_multi_host",
]


# SET, SET SESSION and RESET keep their effect after the transaction; SET LOCAL and SET
# TRANSACTION do not. Anywhere in the text: "SELECT 1; SET search_path TO app" sets it too
_SESSION_STATE = re.compile(
    r"(?:^|;)\s*((?:SET(?!\s+(?:LOCAL|TRANSACTION)\b)|RESET)\s+[\w.\"]+)", re.IGNORECASE
)


class PgBouncerError(DalkitError):
    """Raised for something transaction pooling cannot do: session state, session locks."""


def _statement_name() -> str:
    # unique names: server connections are shared, and asyncpg's own numbering repeats
    return f"__asyncpg_{uuid.uuid4().hex}__"


def pgbouncer_async_config(config: DatabaseConfig) -> DatabaseConfig:
    """`pgbouncer_config` for an AsyncDatabase: a URL naming no driver is asyncpg's.

    Args:
        config: The database's configuration.

    Returns:
        The configuration to connect through PgBouncer with.
    """
    return pgbouncer_config(config, is_async=True)


def pgbouncer_config(config: DatabaseConfig, *, is_async: bool = False) -> DatabaseConfig:
    """``config`` made safe for PgBouncer's transaction mode.

    No server-side prepared statements (psycopg ``prepare_threshold=None``; asyncpg
    ``statement_cache_size=0``, unique statement names and SQLAlchemy's
    ``prepared_statement_cache_size=0``) and no session settings at connect: an ``init`` hook
    that runs ``SET``/``RESET`` fails its connection with `PgBouncerError`.

    Args:
        config: The database's configuration.
        is_async: For an AsyncDatabase (the driver of a URL naming none).

    Returns:
        The configuration to connect through PgBouncer with.

    Raises:
        ConfigurationError: The URL is not PostgreSQL's, or names an unknown driver.
        PgBouncerError: ``statement_timeout_ms`` or ``connect_args["options"]`` is set: session
            state that transaction pooling would hand to other clients.
    """
    if config.backend != "postgresql":
        raise ConfigurationError("pgbouncer=True needs a PostgreSQL URL")
    if config.statement_timeout_ms is not None:
        raise PgBouncerError(
            "statement_timeout_ms is a session setting, and behind PgBouncer in transaction "
            "mode it would apply to whichever client gets the server connection next; run "
            "SET LOCAL statement_timeout = ... inside each transaction instead"
        )
    extra: dict[str, Any] = dict(config.connect_args)
    if "options" in extra:
        raise PgBouncerError(
            "connect_args['options'] sets session state (-c ...), which PgBouncer's transaction "
            "mode cannot keep per client; use SET LOCAL inside each transaction"
        )
    url = config.url
    # the driver the engine will use: a URL naming none gets psycopg's or asyncpg's
    named = "+" in url.drivername
    driver = (url if named else resolve_url(config, is_async=is_async)).get_driver_name()
    if driver == "asyncpg":
        extra.setdefault("statement_cache_size", 0)
        extra.setdefault("prepared_statement_name_func", _statement_name)
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    else:
        extra.setdefault("prepare_threshold", None)
    init = None if config.init is None else _checked_init(config.init)
    return DatabaseConfig.coerce(config, url=url, connect_args=extra, init=init)


def _checked_init(init: InitHook) -> InitHook:
    """``init``, refusing the session state its statements set (a client-side codec's
    catalogue queries pass): PgBouncer would hand it to other clients' transactions."""
    if inspect.iscoroutinefunction(init):

        async def checked_async(connection: Any) -> None:
            with _watched(connection) as seen:
                await init(connection)
                await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
            _refuse_session_state(seen)

        return checked_async

    def checked(connection: Any) -> None:
        with _watched(connection) as seen:
            init(connection)
        _refuse_session_state(seen)

    return checked


@contextmanager
def _watched(connection: Any) -> Iterator[list[str]]:
    """The statements ``connection`` (asyncpg's or psycopg's) runs inside the block."""
    seen: list[str] = []
    if hasattr(connection, "add_query_logger"):  # asyncpg
        logger: Callable[[Any], None] = lambda record: seen.append(str(record.query))  # noqa: E731
        connection.add_query_logger(logger)
        try:
            yield seen
        finally:
            connection.remove_query_logger(logger)
        return
    factory = getattr(connection, "cursor_factory", None)
    if not isinstance(factory, type):  # not psycopg's: nothing to watch
        yield seen
        return
    connection.cursor_factory = _watching_cursor(factory, seen)
    try:
        yield seen
    finally:
        connection.cursor_factory = factory


def _watching_cursor(factory: type, seen: list[str]) -> type:
    # psycopg's Connection.execute() and cursor() both make their cursor with cursor_factory
    def text_of(cursor: Any, query: Any) -> str:
        as_string = getattr(query, "as_string", None)
        if as_string is not None:
            return str(as_string(cursor.connection))
        return query.decode() if isinstance(query, bytes) else str(query)

    if inspect.iscoroutinefunction(factory.execute):  # type: ignore[attr-defined]

        async def execute_async(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(text_of(self, query))
            return await factory.execute(self, query, *args, **kwargs)  # type: ignore[attr-defined]

        return type(factory.__name__, (factory,), {"execute": execute_async})

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(text_of(self, query))
        return factory.execute(self, query, *args, **kwargs)  # type: ignore[attr-defined]

    return type(factory.__name__, (factory,), {"execute": execute})


def _refuse_session_state(statements: list[str]) -> None:
    for statement in statements:
        found = _SESSION_STATE.search(statement)
        if found is not None:  # the setting's name, never its value (it may be a secret)
            raise PgBouncerError(
                f"the init hook ran {found[1]} ...: session state, which PgBouncer's "
                "transaction mode would hand to whichever client gets the server connection "
                "next; run SET LOCAL inside each transaction instead"
            )


def check_session_lock_allowed(db: object, alternative: str = "pg_try_advisory_xact_lock") -> None:
    """Refuse a session-level advisory lock when ``db`` runs behind PgBouncer: the lock would
    stay on a server connection other clients then use. For callers such as the outbox relay.

    Args:
        db: The database (its ``pgbouncer`` attribute says whether it runs behind PgBouncer).
        alternative: The function to use instead, named in the error.

    Raises:
        PgBouncerError: ``db`` was created with ``pgbouncer=True``.
    """
    if getattr(db, "pgbouncer", False):
        raise PgBouncerError(
            "session-level advisory locks (pg_advisory_lock) do not work behind PgBouncer in "
            f"transaction mode: the lock would outlive the transaction on a shared server "
            f"connection; use the transaction-level {alternative}() inside the transaction"
        )


def split_multi_host(url: str | URL | DatabaseConfig) -> tuple[str | URL | DatabaseConfig, bool]:
    """A multi-host URL in SQLAlchemy's spelling, which psycopg and asyncpg both turn into
    libpq-style multi-host connections.

    Args:
        url: A URL, maybe ``postgresql://u:p@h1:5432,h2:5432/app?...``; a URL object or a
            configuration is returned as it is.

    Returns:
        The URL (``postgresql://u:p@/app?host=h1:5432&host=h2:5432&...`` for a multi-host
        one), and whether it named several hosts.

    Examples:
        ```python
        print(split_multi_host("postgresql://u@h1:5432,h2:5432/app")[0])
        #> postgresql://u@/app?host=h1:5432&host=h2:5432
        ```
    """
    if not isinstance(url, str):
        return url, False
    rewritten = split_hosts(url)
    return rewritten, rewritten != url
