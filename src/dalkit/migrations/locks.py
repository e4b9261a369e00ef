"""The run-wide guards: a migration lock (a PostgreSQL session advisory lock, a file lock for
SQLite) so concurrent runs take turns, and session lock_timeout/statement_timeout on PostgreSQL."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dalkit.migrations.errors import MigrationLockError
from dalkit.migrations.settings import MigrationSettings

__all__ = ["lock_key", "migration_lock", "session_timeouts"]

log = logging.getLogger("dalkit.migrations")


def lock_key(version_table: str) -> int:
    """The advisory lock key of a version table: a signed 64-bit integer, the same in every run."""
    digest = hashlib.sha256(f"dalkit.migrations:{version_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def migration_lock(connection: Connection, settings: MigrationSettings) -> Iterator[None]:
    """Hold the migration lock for the block; wait at most ``settings.lock_wait_s`` for it."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        with _advisory_lock(connection, lock_key(settings.version_table), settings.lock_wait_s):
            yield
    elif dialect == "sqlite" and (path := _sqlite_path(connection)) is not None:
        with _file_lock(Path(f"{path}.dalkit-migrate.lock"), settings.lock_wait_s):
            yield
    else:
        yield


@contextlib.contextmanager
def _advisory_lock(connection: Connection, key: int, wait_s: float) -> Iterator[None]:
    # polled with pg_try_advisory_lock and committed at once: a session lock outlives the
    # transaction, and no transaction of ours may stay open (CREATE INDEX CONCURRENTLY waits
    # for every open transaction, ours included: that is the asyncpg hang of alembic#1460)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        acquired = bool(got.scalar())
        connection.commit()
        if acquired:
            break
        if time.monotonic() >= deadline:
            raise MigrationLockError(
                f"another migration run held the lock for more than {wait_s:g} s"
            )
        log.info("waiting for another migration run to finish")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
        except Exception:  # a broken connection frees its session locks when it closes
            connection.invalidate()


@contextlib.contextmanager
def _file_lock(path: Path, wait_s: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MigrationLockError(
                        f"another migration run held {path} for more than {wait_s:g} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_path(connection: Connection) -> str | None:
    database = connection.engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def timeout_statements(settings: MigrationSettings) -> list[str]:
    """The PostgreSQL ``SET`` statements of the settings' lock and statement timeouts.

    Args:
        settings: The migration settings whose timeouts to set.

    Returns:
        One ``SET`` statement for each timeout that is not ``None``.
    """
    return [
        f"SET {name} = {int(value)}"
        for name, value in (
            ("lock_timeout", settings.lock_timeout_ms),
            ("statement_timeout", settings.statement_timeout_ms),
        )
        if value is not None
    ]


@contextlib.contextmanager
def session_timeouts(connection: Connection, settings: MigrationSettings) -> Iterator[None]:
    """On PostgreSQL, SET lock_timeout and statement_timeout for the whole session, so that every
    statement (``op.execute`` and autocommit blocks included) runs under them; RESET after."""
    if connection.dialect.name != "postgresql":
        yield
        return
    for statement in timeout_statements(settings):
        connection.exec_driver_sql(statement)
    connection.commit()
    try:
        yield
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.exec_driver_sql("RESET lock_timeout")
            connection.exec_driver_sql("RESET statement_timeout")
            connection.commit()
        except Exception:  # never hand a connection with our timeouts back to the pool
            connection.invalidate()
