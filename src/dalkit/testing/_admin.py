"""The superuser connection that creates and drops test databases on a PostgreSQL server,
and the stock of databases made ahead of the tests that take them.

One connection serves many databases: the per-test database of the plugin pays neither a
connection (a SCRAM handshake) nor, on PostgreSQL 15+, the WAL copy of its template
(``STRATEGY = FILE_COPY``: the template is copied file by file, in half the time).
"""

from __future__ import annotations

import queue
import re
import threading
import uuid
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
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        """The URL of database ``name`` on this server.

        Args:
            name: A database name.

        Returns:
            Its driverless URL.
        """
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


class DatabaseStock:
    """Brand-new databases for the tests: one is made ahead while a test runs, and the one a
    test is done with is dropped after it, both by a thread on its own connection. A test
    waits for neither: CREATE and DROP DATABASE each take a checkpoint, tens of ms each.

    Args:
        url: A superuser URL of the server.
    """

    def __init__(self, url: str) -> None:
        self._admin = AdminConnection(url)
        self._work: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ready: list[str] = []
        self._coming = 0  # asked of the thread, not ready yet
        self._undropped: list[str] = []  # the thread failed them: dropped again by close()
        self._thread = threading.Thread(
            target=self._serve, name="dalkit-test-databases", daemon=True
        )
        self._thread.start()

    def take(self, admin: AdminConnection) -> tuple[str, str]:
        """A brand-new database: one made ahead, else one ``admin`` makes now (whose failure
        is the caller's to report); another is made ahead for the next test.

        Args:
            admin: The caller's connection, for a database made now.

        Returns:
            The database's name and driverless URL.
        """
        with self._lock:
            name = self._ready.pop() if self._ready else None
            ahead = not self._ready and not self._coming
            self._coming += ahead
        if ahead:
            self._work.put(("create", f"t_{uuid.uuid4().hex}"))
        if name is not None:
            return name, self._admin.url_of(name)
        name = f"t_{uuid.uuid4().hex}"
        return name, admin.create(name)

    def release(self, name: str) -> None:
        """Have database ``name`` dropped (with FORCE) in the background.

        Args:
            name: A database ``take`` gave.
        """
        self._work.put(("drop", name))

    def close(self) -> None:
        """Finish the work asked, then drop the databases made ahead and any the thread could
        not drop (an error here fails the session's teardown), and close the connection."""
        self._work.put(None)
        self._thread.join()
        try:
            for name in [*self._ready, *self._undropped]:
                self._admin.drop(name)
        finally:
            self._admin.close()

    def _serve(self) -> None:
        while (job := self._work.get()) is not None:
            action, name = job
            try:
                if action == "create":
                    self._admin.create(name)
                else:
                    self._admin.drop(name)
            except Exception:
                # a server being restarted by a test, say: a database not made ahead is made
                # by the test that needs it (which reports the error); close() drops again
                if action == "drop":
                    self._undropped.append(name)
            else:
                if action == "create":
                    with self._lock:
                        self._ready.append(name)
            finally:
                if action == "create":
                    with self._lock:
                        self._coming -= 1


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
