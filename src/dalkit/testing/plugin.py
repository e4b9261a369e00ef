"""pytest plugin: fixtures for real PostgreSQL, Redis and SQLite backends, started lazily.

Servers come from DALKIT_TEST_POSTGRES_URL / DALKIT_TEST_REDIS_URL when set, else are
started for the session; a server that cannot start fails the test, never skips it. The async
fixtures need pytest-asyncio, which the ``testing`` extra installs (``dalkit[testing]``).

- ``db`` / ``async_db``: a fresh, empty database per test, on SQLite and on PostgreSQL.
- ``count_queries`` / ``assert_max_queries``: ``with count_queries() as q:`` counts the
  statements of the test's ``async_db`` or ``db`` (else of its ``async_db_rollback`` or
  ``db_rollback`` session); pass another target to count its instead.
- ``db_rollback`` / ``async_db_rollback``: a Session (AsyncSession) inside a transaction that
  is rolled back after the test, as in Django's TestCase; the code under test may commit, roll
  back and nest (savepoints). Their database is shared by the whole test session, with the
  tables of ``dalkit_metadata`` (override it in your conftest.py) created once per backend.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from dalkit.config import DatabaseConfig
from dalkit.testing import queries
from dalkit.testing._admin import AdminConnection, DatabaseStock
from dalkit.testing.postgres import PostgresServer
from dalkit.testing.redis import RedisServer
from dalkit.testing.rollback import RollbackDatabases, async_rollback_session, rollback_session

# fixtures for replicas (primary + streaming replica, promotion) and PgBouncer live beside these
pytest_plugins = ["dalkit.testing.replication", "dalkit.testing.pgbouncer"]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

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
    # under the plugin, databases that choose no N+1 mode warn: a test that loads lazily in a
    # loop says so (an error where warnings are errors) instead of passing slowly
    from dalkit.observe import set_default_nplusone

    set_default_nplusone("warn")


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
    try:  # finding the binaries may fail too
        server = PostgresServer()
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
        # read as DALKIT_DATABASE_URL is: an '@' in the password needs no percent-encoding
        parsed = DatabaseConfig.from_url(external).url
        return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
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
    try:  # finding the binary may fail too
        server = RedisServer()
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


@pytest.fixture(scope="session")
def _postgres_admin(postgres_url: str) -> Iterator[AdminConnection]:
    # one superuser connection creates and drops every test's database: a connection each
    # (a SCRAM handshake) cost more than the CREATE DATABASE itself
    with closing(AdminConnection(postgres_url)) as admin:
        yield admin


@pytest.fixture(scope="session")
def _postgres_stock(postgres_url: str) -> Iterator[DatabaseStock]:
    stock = DatabaseStock(postgres_url)
    try:
        yield stock
    finally:
        stock.close()


@pytest.fixture
def postgres_database_url(
    postgres_url: str, _postgres_admin: AdminConnection, _postgres_stock: DatabaseStock
) -> Iterator[str]:
    """Driverless URL of a brand-new database, force-dropped after the test (made ahead and
    dropped in the background, while tests run)."""
    with _creating_a_database(postgres_url):
        name, url = _postgres_stock.take(_postgres_admin)
    try:
        yield url
    finally:
        _postgres_stock.release(name)


@contextmanager
def _creating_a_database(postgres_url: str | Callable[[], str]) -> Iterator[None]:
    """A server that refuses the block's connection fails the test naming the server: the
    traceback would show the password, among the arguments of ``psycopg.connect()``."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):
            raise
        url = postgres_url if isinstance(postgres_url, str) else postgres_url()
        server = make_url(url).render_as_string(hide_password=True)
        pytest.fail(f"could not create a test database on {server}: {exc}", pytrace=False)


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


# --- query counting bound to the test's database ---------------------------------------------


def _test_database(request: pytest.FixtureRequest) -> Any:
    # an async test counts its async_db; asking for it again returns the one already set up
    names = request.fixturenames
    if "async_db" in names and "db" not in names:
        return request.getfixturevalue("async_db")
    if "db" not in names:
        # a rollback test's session: counting a fresh `db` instead would see none of its queries
        for rollback in ("async_db_rollback", "db_rollback"):
            if rollback in names:
                return request.getfixturevalue(rollback).bind.engine
    return request.getfixturevalue("db")


@pytest.fixture
def count_queries(
    request: pytest.FixtureRequest, db_backend: str
) -> Callable[..., AbstractContextManager[queries.QueryCounter]]:
    """``with count_queries() as q:`` counts the statements the test's database runs inside the
    block (``async_db`` when the test uses it, else ``db``, else the database of its
    ``async_db_rollback`` or ``db_rollback`` session); ``count_queries(target)`` counts another
    Engine, AsyncEngine or database."""

    def bound(
        target: queries.QueryTarget | None = None,
    ) -> AbstractContextManager[queries.QueryCounter]:
        return queries.count_queries(target if target is not None else _test_database(request))

    return bound


@pytest.fixture
def assert_max_queries(
    request: pytest.FixtureRequest, db_backend: str
) -> Callable[..., AbstractContextManager[queries.QueryCounter]]:
    """``with assert_max_queries(3):`` fails the test, listing the statements, when the block
    runs more than 3 on the test's database (``target=`` names another)."""

    def bound(
        limit: int, target: queries.QueryTarget | None = None
    ) -> AbstractContextManager[queries.QueryCounter]:
        found = target if target is not None else _test_database(request)
        return queries.assert_max_queries(found, limit)

    return bound


# --- per-test rollback -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def dalkit_metadata() -> Sequence[MetaData]:
    """The MetaData whose tables ``db_rollback`` creates once per backend and test session,
    besides dalkit's own; override this fixture in your conftest.py (none by default)."""
    return ()


@pytest.fixture(scope="session")
def dalkit_rollback_databases(
    tmp_path_factory: pytest.TempPathFactory, dalkit_metadata: Sequence[MetaData] | MetaData
) -> Iterator[RollbackDatabases]:
    """The shared databases of the rollback fixtures, one per backend, dropped at the end."""
    metadatas = [dalkit_metadata] if isinstance(dalkit_metadata, MetaData) else dalkit_metadata
    databases = RollbackDatabases(tmp_path_factory.mktemp("dalkit-rollback"), metadatas)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def db_rollback(
    db_backend: str, request: pytest.FixtureRequest, dalkit_rollback_databases: RollbackDatabases
) -> Iterator[Session]:
    """A Session in a transaction rolled back after the test (savepoints inside), on a shared
    database whose tables exist already: no create_all/drop_all per test."""
    postgres_url = _postgres_url_of(request)
    with _creating_a_database(postgres_url):
        db = dalkit_rollback_databases.database(db_backend, postgres_url)
    with rollback_session(db) as session:
        yield session


@_async_fixture()
async def async_db_rollback(
    db_backend: str, request: pytest.FixtureRequest, dalkit_rollback_databases: RollbackDatabases
) -> AsyncIterator[AsyncSession]:
    """The async twin of ``db_rollback`` (aiosqlite or asyncpg), on the same shared database."""
    from dalkit import AsyncDatabase

    postgres_url = _postgres_url_of(request)
    with _creating_a_database(postgres_url):
        url = dalkit_rollback_databases.url(db_backend, postgres_url)
    driver = "postgresql+asyncpg" if db_backend == "postgres" else "sqlite+aiosqlite"
    # an async pool belongs to one event loop, and each test has its own: one per test
    async with AsyncDatabase(make_url(url).set(drivername=driver)) as db:
        async with async_rollback_session(db) as session:
            yield session


def _postgres_url_of(request: pytest.FixtureRequest) -> Callable[[], str]:
    def postgres_url() -> str:
        url: str = request.getfixturevalue("postgres_url")
        return url

    return postgres_url
