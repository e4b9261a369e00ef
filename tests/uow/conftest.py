"""Fixtures for the unit-of-work tests: the sync and async databases of the test's backend with
the test tables and dalkit's own, an event bus that remembers what it delivered, and a publisher
that keeps the amounts of what it published."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, AsyncOutboxRelay, Database, DomainEvent, EventBus, OutboxRelay
from dalkit.outbox.messages import OutboxMessage
from dalkit.tables import metadata as dalkit_metadata
from dalkit.testing.postgres import create_database

from .models import Base


class RecordingBus(EventBus):
    """An EventBus whose ``seen`` lists every event it dispatched, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[DomainEvent] = []
        self.subscribe(DomainEvent, self.seen.append)


class FailsFirst:
    """An event handler whose first call raises; ``calls`` counts them all."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: DomainEvent) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("first delivery fails")


class RoundFailures(logging.Handler):
    """Notes when each failed round of ``relay`` (either kind) was logged, and stops it at the
    third; listens to dalkit.outbox's log inside its ``with`` block."""

    def __init__(self, relay: OutboxRelay | AsyncOutboxRelay) -> None:
        super().__init__()
        self.relay = relay
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("outbox relay round failed"):
            self.times.append(time.monotonic())
            if len(self.times) == 3:
                self.relay.stop()

    def __enter__(self) -> RoundFailures:
        logging.getLogger("dalkit.outbox").addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("dalkit.outbox").removeHandler(self)


class Amounts:
    """A publisher (sync and async) keeping the amounts of what it published, in order."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def publish(self, message: OutboxMessage) -> None:
        self.seen.append(int(message.payload["amount"]))


class AsyncAmounts(Amounts):
    async def publish(self, message: OutboxMessage) -> None:  # type: ignore[override]
        self.seen.append(int(message.payload["amount"]))


# A create_all per test was most of the package's time (180 ms of a PostgreSQL test's ~250,
# 55 ms of a SQLite test's ~90): each test's ``database`` is a copy of one made once per backend


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with the test tables and dalkit's, made once, copied for each test."""
    path = tmp_path_factory.mktemp("uow-template") / "template.db"
    with Database(f"sqlite:///{path}") as db:
        db.create_all(Base.metadata)
    # disposed: the WAL was checkpointed into the file, which is all there is to copy
    assert not path.with_name(f"{path.name}-wal").exists()
    return path


class PostgresTemplate:
    """A PostgreSQL database with the test tables and dalkit's, which each test's database is
    created from (``CREATE DATABASE ... TEMPLATE``), on a connection of its own."""

    def __init__(self, postgres_url: str) -> None:
        self.postgres_url = postgres_url
        self.name = f"uow_template_{uuid.uuid4().hex[:12]}"
        url = create_database(postgres_url, self.name)
        with Database(with_driver(url, "postgresql+psycopg")) as db:
            db.create_all(Base.metadata)  # disposed: no connection left to the template
        self.admin = psycopg.connect(postgres_url, autocommit=True)

    def copy(self) -> str:
        """A new database with the tables; its name."""
        name = f"t_{uuid.uuid4().hex}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.name)
        )
        if self.admin.info.server_version >= 150000:  # the option came with PostgreSQL 15
            # a file copy of the template, not its WAL-logged copy: half the time
            statement = sql.SQL("{} STRATEGY = FILE_COPY").format(statement)
        self.admin.execute(statement)
        return name

    def drop(self, name: str) -> None:
        self.admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        try:
            self.drop(self.name)
        finally:
            self.admin.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[PostgresTemplate]:
    template = PostgresTemplate(postgres_url)
    try:
        yield template
    finally:
        template.close()


@contextmanager
def _copied_url(
    db_backend: str, request: pytest.FixtureRequest, tmp_path: Path, *, is_async: bool
) -> Iterator[str]:
    """The URL of a new database with the tables (dropped after the test on PostgreSQL);
    PostgreSQL is started only for the tests that need it."""
    if db_backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.db"
        shutil.copyfile(template, path)
        yield f"{'sqlite+aiosqlite' if is_async else 'sqlite'}:///{path}"
        return
    postgres: PostgresTemplate = request.getfixturevalue("postgres_template")
    name = postgres.copy()
    driver = "postgresql+asyncpg" if is_async else "postgresql+psycopg"
    url = make_url(postgres.postgres_url).set(database=name, drivername=driver)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        postgres.drop(name)


@pytest.fixture
def database(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of the test's backend with the test tables and dalkit's audit log, outbox
    and inbox, disposed after the test."""
    with _copied_url(db_backend, request, tmp_path, is_async=False) as url:
        db = Database(url)
        # the tables count as created through this engine, as create_all's did (what the
        # raw-SQL guards of the audit and of tenant scoping go by)
        db.serves(Base.metadata, dalkit_metadata)
        try:
            yield db
        finally:
            db.dispose()


@pytest.fixture
async def async_database(
    db_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncDatabase]:
    with _copied_url(db_backend, request, tmp_path, is_async=True) as url:
        db = AsyncDatabase(url)
        db.serves(Base.metadata, dalkit_metadata)  # as in ``database``
        try:
            yield db
        finally:
            await db.dispose()


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


def with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
def pg_database(postgres_database_url: str) -> Iterator[Database]:
    """A Database (psycopg) on a fresh PostgreSQL database with the tables."""
    database = Database(with_driver(postgres_database_url, "postgresql+psycopg"))
    database.create_all(Base.metadata)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
async def pg_async_database(postgres_database_url: str) -> AsyncIterator[AsyncDatabase]:
    """An AsyncDatabase (asyncpg) on a fresh PostgreSQL database with the tables."""
    database = AsyncDatabase(with_driver(postgres_database_url, "postgresql+asyncpg"))
    await database.create_all(Base.metadata)
    try:
        yield database
    finally:
        await database.dispose()
