"""pytest plugin: fixtures for real PostgreSQL, Redis and SQLite backends, started lazily.

Servers come from DALKIT_TEST_POSTGRES_URL / DALKIT_TEST_REDIS_URL when set, else are
started for the session; a server that cannot start fails the test, never skips it.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
from sqlalchemy.engine import make_url

from dalkit.testing.postgres import PostgresServer, create_database, drop_database
from dalkit.testing.redis import RedisServer

if TYPE_CHECKING:
    from dalkit import AsyncDatabase, Database

POSTGRES_URL_ENV = "DALKIT_TEST_POSTGRES_URL"
REDIS_URL_ENV = "DALKIT_TEST_REDIS_URL"
_POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url", "postgres_database_url"})

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture() -> Callable[[_F], _F]:
    # pytest-asyncio is a test-time extra: without it the plugin must still load,
    # and pytest itself then reports that nothing can run the async fixture.
    try:
        module = importlib.import_module("pytest_asyncio")
    except ImportError:
        return cast("Callable[[_F], _F]", pytest.fixture)
    return cast("Callable[[_F], _F]", module.fixture)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: the test needs a PostgreSQL server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # So that `-m "not postgres"` also leaves out tests that ask for PostgreSQL directly.
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster started for this session (not available with an external URL)."""
    if os.environ.get(POSTGRES_URL_ENV):
        pytest.fail(
            f"this test controls the server itself (restart, ...), "
            f"which is impossible while {POSTGRES_URL_ENV} points at an external one",
            pytrace=False,
        )
    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:  # whatever the reason, it belongs in the report
        pytest.fail(f"could not start PostgreSQL for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """Driverless URL of a PostgreSQL superuser connection: external, or a session server."""
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        return make_url(external).set(drivername="postgresql").render_as_string(hide_password=False)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server started for this session (not available with an external URL)."""
    if os.environ.get(REDIS_URL_ENV):
        pytest.fail(
            f"this test controls the Redis server itself, impossible while {REDIS_URL_ENV} is set",
            pytrace=False,
        )
    server = RedisServer()
    try:
        server.start()
    except Exception as exc:  # whatever the reason, it belongs in the report
        pytest.fail(f"could not start Redis for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """``redis://`` URL: external, or a session server."""
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        return external
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A file SQLite database private to the test."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """Driverless URL of a brand-new database, force-dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex}"
    try:
        url = create_database(postgres_url, name)
    except psycopg.OperationalError as exc:
        server = make_url(postgres_url).render_as_string(hide_password=True)
        pytest.fail(f"could not create a test database on {server}: {exc}", pytrace=False)
    try:
        yield url
    finally:
        drop_database(postgres_url, name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_backend(request: pytest.FixtureRequest) -> str:
    """Which backend this run of the test uses: ``"sqlite"`` or ``"postgres"``."""
    backend: str = request.param
    return backend


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest) -> str:
    """Sync URL of an empty database on the test's backend (pysqlite or psycopg)."""
    return _backend_url(db_backend, request, sqlite="sqlite", postgres="postgresql+psycopg")


@pytest.fixture
def async_db_url(db_backend: str, request: pytest.FixtureRequest) -> str:
    """Async URL of the same empty database as ``db_url`` (aiosqlite or asyncpg)."""
    return _backend_url(
        db_backend, request, sqlite="sqlite+aiosqlite", postgres="postgresql+asyncpg"
    )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A ``dalkit.Database`` on the test's backend, disposed after the test."""
    from dalkit import Database

    database = Database(db_url)
    try:
        yield database
    finally:
        database.dispose()


@_async_fixture()
async def async_db(async_db_url: str) -> AsyncIterator[AsyncDatabase]:
    """A ``dalkit.AsyncDatabase`` on the test's backend, disposed after the test."""
    from dalkit import AsyncDatabase

    database = AsyncDatabase(async_db_url)
    try:
        yield database
    finally:
        await database.dispose()


def _backend_url(
    backend: str, request: pytest.FixtureRequest, *, sqlite: str, postgres: str
) -> str:
    # getfixturevalue keeps PostgreSQL unstarted for runs that only use SQLite.
    if backend == "sqlite":
        base: str = request.getfixturevalue("sqlite_url")
        driver = sqlite
    elif backend == "postgres":
        base = request.getfixturevalue("postgres_database_url")
        driver = postgres
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return make_url(base).set(drivername=driver).render_as_string(hide_password=False)
