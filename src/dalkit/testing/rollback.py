"""Per-test rollback, like Django's TestCase: a session inside a transaction that is rolled back
at the end of the test, on a database whose schema is created once per test session.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from dalkit.testing.postgres import create_database, drop_database

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from dalkit import AsyncDatabase, Database

__all__ = ["RollbackDatabases", "async_rollback_session", "rollback_session"]


@contextmanager
def rollback_session(db: Database) -> Iterator[Session]:
    """A session of ``db`` on one connection whose outer transaction is rolled back on exit.

    The session joins that transaction through savepoints: ``commit()`` in the code under test
    releases a savepoint, ``rollback()`` returns to it, ``begin_nested()`` nests, and nothing
    reaches the database for good.
    """
    with db.engine.connect() as connection:
        outer = connection.begin()
        session = db.session_factory(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            if outer.is_active:
                outer.rollback()


@asynccontextmanager
async def async_rollback_session(db: AsyncDatabase) -> AsyncIterator[AsyncSession]:
    """The async twin of `rollback_session()`."""
    async with db.engine.connect() as connection:
        outer = await connection.begin()
        session = db.session_factory(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            await session.close()
            if outer.is_active:
                await outer.rollback()


class RollbackDatabases:
    """One database per backend for the whole test session, its tables created once: the
    rollback fixtures share it, since no test leaves anything behind."""

    def __init__(self, directory: Path, metadatas: Sequence[MetaData]) -> None:
        self._directory = directory
        self._metadatas = tuple(metadatas)
        self._urls: dict[str, str] = {}
        self._databases: dict[str, Database] = {}
        self._postgres: tuple[str, str] | None = None  # (server URL, database name)

    def url(self, backend: str, postgres_url: Callable[[], str]) -> str:
        """Driverless URL of this backend's shared database, created with its tables on first
        use; ``postgres_url`` is asked only when PostgreSQL is."""
        if backend not in self._urls:
            if backend == "sqlite":
                url = f"sqlite:///{self._directory / 'rollback.db'}"
            elif backend == "postgres":
                server = postgres_url()
                name = f"t_rollback_{uuid.uuid4().hex}"
                url = create_database(server, name)
                self._postgres = (server, name)
            else:
                raise ValueError(f"unknown backend {backend!r}")
            self._databases[backend] = self._with_schema(url)
            self._urls[backend] = url
        return self._urls[backend]

    def database(self, backend: str, postgres_url: Callable[[], str]) -> Database:
        """The shared sync Database of this backend."""
        self.url(backend, postgres_url)
        return self._databases[backend]

    def _with_schema(self, url: str) -> Database:
        from dalkit import Database

        driver = "postgresql+psycopg" if url.startswith("postgresql") else "sqlite"
        db = Database(make_url(url).set(drivername=driver))
        db.create_all(*self._metadatas)
        return db

    def close(self) -> None:
        for db in self._databases.values():
            db.dispose()
        if self._postgres is not None:
            import psycopg  # only with PostgreSQL, as drop_database does

            # the session's own server, asked for after this fixture, was stopped before it
            # (pytest ends session fixtures in reverse order): its databases went with it
            with contextlib.suppress(psycopg.OperationalError):
                drop_database(*self._postgres)
