"""SQLite behaviour dalkit adds over SQLAlchemy's: read-only transactions that refuse writes,
the one-connection pool that makes an in-memory database safe to share between threads, and
opening only a file that exists (for tools that must not create a database by looking at it).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from dalkit.config import is_memory_sqlite
from dalkit.errors import ConnectionFailedError

if TYPE_CHECKING:
    from dalkit.config import DatabaseConfig

__all__ = [
    "SQLITE_QUERY_ONLY_OPTION",
    "existing_database_only",
    "install_sqlite_read_only",
    "is_memory_sqlite",
    "memory_sqlite_pool_kwargs",
]

#: Execution option asking for a SQLite transaction that refuses writes (``PRAGMA query_only``),
#: what ``SET TRANSACTION READ ONLY`` is on PostgreSQL; the pragma is reset when it ends.
SQLITE_QUERY_ONLY_OPTION = "dalkit_sqlite_query_only"
_QUERY_ONLY_SET = "dalkit_query_only_set"


def memory_sqlite_pool_kwargs(config: DatabaseConfig) -> dict[str, Any]:
    """Pool arguments for an in-memory SQLite database: one connection, lent to one checkout
    at a time (a second waits up to ``pool_timeout``), never recycled or pinged.

    The database lives only as long as its one connection, so a second connection would see
    another, empty database; SQLAlchemy's StaticPool shares the connection itself, so two
    threads interleave their transactions on it and lose writes. A shared-cache database
    (``file:x?mode=memory&cache=shared``) would give each checkout its own connection, but
    its table locks fail at once (SQLITE_LOCKED ignores busy_timeout): writers would get
    errors instead of waiting their turn.

    Args:
        config: The database's configuration (its ``pool_timeout``).

    Returns:
        Keyword arguments for the engine's pool.
    """
    return {
        "pool_size": 1,
        "max_overflow": 0,
        "pool_timeout": config.pool_timeout,
        "pool_recycle": -1,
        "pool_pre_ping": False,
    }


def install_sqlite_read_only(engine: Engine) -> None:
    """Make transactions begun with ``SQLITE_QUERY_ONLY_OPTION`` refuse writes on ``engine``.

    The pragma is turned off again at COMMIT or ROLLBACK, and on checkin should the transaction
    end some other way, so the pooled connection serves the next writer normally.

    Args:
        engine: A SQLite engine: the sync engine, also under an AsyncEngine.
    """

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(SQLITE_QUERY_ONLY_OPTION):
            _set_query_only(connection.connection.dbapi_connection, connection.info, on=True)

    def _on_end(connection: Connection) -> None:
        if connection.info.get(_QUERY_ONLY_SET):
            _set_query_only(connection.connection.dbapi_connection, connection.info, on=False)

    event.listen(engine, "commit", _on_end)
    event.listen(engine, "rollback", _on_end)

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and record.info.get(_QUERY_ONLY_SET):
            _set_query_only(dbapi_connection, record.info, on=False)


def _set_query_only(dbapi_connection: Any, info: dict[Any, Any], *, on: bool) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA query_only={'ON' if on else 'OFF'}")
    finally:
        cursor.close()
    if on:
        info[_QUERY_ONLY_SET] = True
    else:
        info.pop(_QUERY_ONLY_SET, None)


def existing_database_only(config: DatabaseConfig) -> DatabaseConfig:
    """``config``, changed so that connecting never creates a SQLite file that does not exist.

    The check alone would race with a file deleted in between, so the file is also opened
    through a SQLite URI with ``mode=rw``, which makes SQLite itself refuse to create it.

    Args:
        config: The database's configuration.

    Returns:
        The configuration to connect with; other databases, and in-memory SQLite, unchanged.

    Raises:
        ConnectionFailedError: The SQLite file does not exist (the message names its path).
    """
    url = config.url
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url) or url.database is None:
        return config
    if url.query.get("uri") == "true":
        # already a URI: its mode is the caller's choice, unless it has none
        if "mode" in url.query:
            return config
        return dataclasses.replace(config, url=url.update_query_dict({"mode": "rw"}))
    path = os.path.abspath(url.database)
    if not os.path.isfile(path):
        raise ConnectionFailedError(f"no SQLite database file at {path} (none was created)")
    uri = "file:" + quote(path)
    return dataclasses.replace(
        config, url=url.set(database=uri).update_query_dict({"mode": "rw", "uri": "true"})
    )
