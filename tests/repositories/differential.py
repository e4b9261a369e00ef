"""What the differential suites share: one sync and one async database on the same server, each
given the same rows and asked the same reads, and how to make them on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, Database
from dalkit.testing.postgres import create_database, drop_database

#: how a suite runs one read (``op``, a tuple) on a repository, sync and async
SyncRead = Callable[..., Any]
AsyncRead = Callable[..., Awaitable[Any]]


class Backends:
    """One sync and one async database on the same server, and a loop for the async one.

    Args:
        sync_url: The sync database's URL.
        async_url: The async database's URL (the same database).
        model: The model the suite reads (its metadata's tables are created).
        repositories: The sync and the async repository class of ``model``.
    """

    def __init__(
        self, sync_url: str, async_url: str, model: Any, repositories: tuple[Any, Any]
    ) -> None:
        self.model, (self.repository, self.async_repository) = model, repositories
        self.db = Database(sync_url)
        self.db.create_all(model.metadata)
        self.runner = asyncio.Runner()
        self.adb = AsyncDatabase(async_url)

    def close(self) -> None:
        self.db.dispose()
        self.runner.run(self.adb.dispose())
        self.runner.close()

    def check(
        self, memory: Any, rows: list[dict[str, Any]], ops: Any, reads: tuple[SyncRead, AsyncRead]
    ) -> list[Any]:
        """Asserts that the sync and the async repository answer ``ops`` over ``rows`` as the
        in-memory repository class ``memory`` does.

        Args:
            memory: The in-memory repository class.
            rows: The rows, as keyword arguments of the model.
            ops: The reads, each a tuple ``run_sync(repository, *op)`` takes.
            reads: Runs one read on a sync repository, and on an async one.

        Returns:
            The in-memory answers.
        """
        stored = memory([self.model(**row) for row in rows])
        expected = [reads[0](stored, *op) for op in ops]
        sync, in_async = self.answers(rows, ops, *reads)
        assert sync == expected
        assert in_async == expected
        return expected

    def answers(
        self, rows: list[dict[str, Any]], ops: Any, run_sync: SyncRead, run_async: AsyncRead
    ) -> tuple[list[Any], list[Any]]:
        """What the sync and the async repository answer to ``ops`` over ``rows``, each in a
        transaction rolled back after.

        Args:
            rows: The rows, as keyword arguments of the model.
            ops: The reads, each a tuple ``run_sync(repository, *op)`` takes.
            run_sync: Runs one read on a sync repository.
            run_async: Runs one read on an async repository.

        Returns:
            The sync answers and the async ones.
        """
        with self.db.session_factory() as session:
            session.execute(sa.delete(self.model))
            repository = self.repository(session)
            repository.add_many([self.model(**row) for row in rows])
            session.expire_all()
            sync = [run_sync(repository, *op) for op in ops]
            session.rollback()
        return sync, self.runner.run(self._async_answers(rows, ops, run_async))

    async def _async_answers(
        self, rows: list[dict[str, Any]], ops: Any, run_async: AsyncRead
    ) -> list[Any]:
        async with self.adb.session_factory() as session:
            await session.execute(sa.delete(self.model))
            repository = self.async_repository(session)
            await repository.add_many([self.model(**row) for row in rows])
            session.expire_all()
            answers = [await run_async(repository, *op) for op in ops]
            await session.rollback()
            return answers


def fixtures(model: Any, repositories: tuple[Any, Any]) -> tuple[Any, Any]:
    """The module-scoped fixtures ``sqlite_backends`` and ``postgres_backends`` of a suite.

    Args:
        model: The model the suite reads.
        repositories: Its sync and async repository classes.

    Returns:
        The two fixtures, to be bound to those names in the suite's module.
    """

    @pytest.fixture(scope="module")
    def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
        directory = tmp_path_factory.mktemp(model.__tablename__)
        with sqlite_backends(directory, model, repositories) as made:
            yield made

    @pytest.fixture(scope="module")
    def postgres(postgres_url: str) -> Iterator[Backends]:
        with postgres_backends(postgres_url, model, repositories) as made:
            yield made

    return sqlite, postgres


@contextlib.contextmanager
def sqlite_backends(
    directory: Path, model: Any, repositories: tuple[Any, Any]
) -> Iterator[Backends]:
    """`Backends` on a SQLite file in ``directory`` (pysqlite and aiosqlite)."""
    path = directory / "differential.db"
    backends = Backends(f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}", model, repositories)
    try:
        yield backends
    finally:
        backends.close()


@contextlib.contextmanager
def postgres_backends(
    postgres_url: str, model: Any, repositories: tuple[Any, Any]
) -> Iterator[Backends]:
    """`Backends` on a fresh PostgreSQL database (psycopg and asyncpg), dropped after."""
    name = f"differential_{uuid.uuid4().hex[:12]}"
    url = make_url(create_database(postgres_url, name))

    def driver(name: str) -> str:
        return url.set(drivername=name).render_as_string(hide_password=False)

    backends = Backends(
        driver("postgresql+psycopg"), driver("postgresql+asyncpg"), model, repositories
    )
    try:
        yield backends
    finally:
        backends.close()
        drop_database(postgres_url, name)
