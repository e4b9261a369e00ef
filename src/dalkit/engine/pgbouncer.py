"""Running behind PgBouncer in transaction pooling mode, and libpq-style multi-host URLs for
failover: the engine settings each needs and the session features each must refuse.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.engine import URL

from dalkit.config import DatabaseConfig, split_hosts
from dalkit.errors import ConfigurationError, DalkitError

__all__ = [
    "PgBouncerError",
    "check_session_lock_allowed",
    "pgbouncer_config",
    "split_multi_host",
]


class PgBouncerError(DalkitError):
    """Raised for something transaction pooling cannot do: session state, session locks."""


def _statement_name() -> str:
    # unique names: server connections are shared, and asyncpg's own numbering repeats
    return f"__asyncpg_{uuid.uuid4().hex}__"


def pgbouncer_config(config: DatabaseConfig) -> DatabaseConfig:
    """``config`` made safe for PgBouncer's transaction mode.

    No server-side prepared statements (psycopg ``prepare_threshold=None``; asyncpg
    ``statement_cache_size=0``, unique statement names and SQLAlchemy's
    ``prepared_statement_cache_size=0``) and no session settings at connect.

    Args:
        config: The database's configuration.

    Returns:
        The configuration to connect through PgBouncer with.

    Raises:
        ConfigurationError: The URL is not PostgreSQL's.
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
    driver = url.get_driver_name() if "+" in url.drivername else ""
    if driver == "asyncpg":
        extra.setdefault("statement_cache_size", 0)
        extra.setdefault("prepared_statement_name_func", _statement_name)
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    else:
        extra.setdefault("prepare_threshold", None)
    return DatabaseConfig.coerce(config, url=url, connect_args=extra)


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
