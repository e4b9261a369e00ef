"""The superuser connection that creates and drops test databases on a PostgreSQL server.

One connection serves many databases: the per-test database of the plugin pays neither a
connection (a SCRAM handshake) nor, on PostgreSQL 15+, the WAL copy of its template
(``STRATEGY = FILE_COPY``: the template is copied file by file, in half the time).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    import psycopg

_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FILE_COPY_SINCE = 150000  # CREATE DATABASE's STRATEGY option came with PostgreSQL 15


class AdminConnection:
    """An autocommit connection to the server at ``url`` (any database of it), opened at its
    first statement and opened again when the server dropped it (say, after a restart).

    Args:
        url: A URL of the server, with or without a driver name.
    """

    def __init__(self, url: str) -> None:
        self._server = make_url(url).set(drivername="postgresql")
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def create(self, name: str) -> str:
        """Create database ``name``.

        Args:
            name: A plain identifier.

        Returns:
            The driverless URL of the new database.
        """
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(checked_name(name)))
        if self._connect().info.server_version >= _FILE_COPY_SINCE:
            statement = sql.SQL("{} STRATEGY = FILE_COPY").format(statement)
        self._execute(statement)
        return self._server.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        """Drop database ``name`` when it exists, disconnecting whoever still uses it.

        Args:
            name: A plain identifier.
        """
        from psycopg import sql

        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(checked_name(name))
            )
        )

    def close(self) -> None:
        """Close the connection; the next statement opens another."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        if self._connection is not None and self._connection.broken:
            self.close()
        if self._connection is None:
            self._connection = psycopg.connect(_libpq(self._server), autocommit=True)
        return self._connection

    def _execute(self, statement: psycopg.sql.Composed) -> None:
        import psycopg

        try:
            self._connect().execute(statement)
        except psycopg.OperationalError:
            # a connection the server ended since its last statement fails at the next one:
            # the statement never ran, so it runs again on a new connection
            if self._connection is None or not self._connection.broken:
                raise
            self.close()
            self._connect().execute(statement)


def checked_name(name: str) -> str:
    """``name`` when it is a plain identifier, else ValueError.

    Args:
        name: A database name.

    Returns:
        ``name``.
    """
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def _libpq(url: URL) -> str:
    # psycopg understands only the libpq spelling, not SQLAlchemy's "+driver".
    return url.render_as_string(hide_password=False)
