"""Test-suite wiring: pytester lets the harness tests run the dalkit plugin in inner sessions;
``project_module`` writes a module of the user's project, as the CLI's ``module:attr`` find it;
``frozen_heap`` keeps a test's ``gc.collect()`` to the objects it made; a ``no_cover`` test's
child processes go unmeasured, as the test itself does; under ``PYTHONDONTWRITEBYTECODE`` the
run's processes still share compiled modules, kept in ``.pytest_cache/bytecode``;
``table_copy`` gives a test a new database with a schema's tables, copied from one made once."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from dalkit import Database
from dalkit.testing._admin import DatabaseStock
from dalkit.testing.postgres import create_database

pytest_plugins = ("pytester",)


def pytest_configure(config: pytest.Config) -> None:
    """Where ``PYTHONDONTWRITEBYTECODE`` is set (this machine's environment sets it), every
    Python process compiled each module it imported, the pytest process and the ~100 children
    the tests start (relays, readers, CLI runs, mkdocs), 1-2 s of CPU each before doing
    anything, and pytest rewrote every test module again. The run writes its bytecode after
    all, under ``PYTHONPYCACHEPREFIX`` (``.pytest_cache/bytecode`` unless one is set), so the
    source tree stays as clean as the variable kept it, and the children inherit both.

    Args:
        config: The session's configuration.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return  # bytecode is cached beside the sources, as usual
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or str(
        config.rootpath / ".pytest_cache" / "bytecode"
    )
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.dont_write_bytecode = False
    sys.pycache_prefix = prefix


# how coverage's `patch = ["subprocess"]` (pyproject.toml) has each Python child measure itself
_CHILD_COVERAGE = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


@pytest.fixture(autouse=True)
def _no_cover_children(request: pytest.FixtureRequest) -> None:
    """pytest-cov's ``no_cover`` pauses the measuring of the test's own process only: its
    children, which inherit the environment, each still started coverage (~0.3 s) and ran
    under its tracer. A test marked ``no_cover`` starts them unmeasured too."""
    if request.node.get_closest_marker("no_cover") is not None:
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name in _CHILD_COVERAGE:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def project_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """``project_module(source)`` writes a module in the current directory (``tmp_path``, which
    is not on ``sys.path``, as for a console script) and returns its name; imported ones are
    forgotten after the test."""
    monkeypatch.chdir(tmp_path)
    names: list[str] = []

    def write(source: str) -> str:
        name = f"project_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The test's collections look only at what it made since it began: the suite's objects so
    far are frozen (``gc.freeze``, undone after the test), else each full collection walks the
    whole session's heap, 2-4 s late in the suite. What the frozen objects hold stays alive,
    as before: a registry made earlier that kept a database would still fail the test."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --- databases with a schema's tables, copied ------------------------------------------------
# A create_all per test was most of the time of the packages whose tests each need the tables
# (180 ms of a PostgreSQL test's ~250 in tests/uow, 55 ms of a SQLite test's ~90): a test's
# database is instead a copy of one made once per schema and backend.


class _SqliteTemplates:
    """Files with a schema's tables (and dalkit's), copied for each test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: dict[MetaData, Path] = {}

    def of(self, metadata: MetaData) -> Path:
        path = self.paths.get(metadata)
        if path is None:
            path = self.directory / f"template-{len(self.paths)}.db"
            with Database(f"sqlite:///{path}") as db:
                db.create_all(metadata)
            # disposed: the WAL was checkpointed into the file, which is all there is to copy
            assert not path.with_name(f"{path.name}-wal").exists()
            self.paths[metadata] = path
        return path


@pytest.fixture(scope="session")
def _sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> _SqliteTemplates:
    return _SqliteTemplates(tmp_path_factory.mktemp("templates"))


class _PostgresTemplates:
    """Databases with a schema's tables (and dalkit's) that tests' databases are created from
    (``CREATE DATABASE ... TEMPLATE``), each on a connection of its own: a session-long one
    dies with the first test that terminates every backend of the server."""

    def __init__(self, postgres_url: str, stock: DatabaseStock) -> None:
        self.postgres_url = postgres_url
        self.names: dict[MetaData, str] = {}
        # the plugin's stock drops a test's copy in the background, as it drops the databases
        # of postgres_database_url: a DROP DATABASE takes a checkpoint, tens of ms
        self.stock = stock

    def copy(self, metadata: MetaData) -> str:
        """A new database with the tables of ``metadata`` and dalkit's; its name."""
        template = self.names.get(metadata)
        if template is None:
            template = f"template_{uuid.uuid4().hex[:12]}"
            url = make_url(create_database(self.postgres_url, template))
            with Database(url.set(drivername="postgresql+psycopg")) as db:
                db.create_all(metadata)  # disposed: no connection is left to the template
            self.names[metadata] = template
        name = f"t_{uuid.uuid4().hex}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        with psycopg.connect(self.postgres_url, autocommit=True) as admin:
            if admin.info.server_version >= 150000:  # the option came with PostgreSQL 15
                # a file copy of the template, not its WAL-logged copy: half the time
                statement = sql.SQL("{} STRATEGY = FILE_COPY").format(statement)
            admin.execute(statement)
        return name

    def close(self) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as admin:
            for name in self.names.values():
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def _postgres_templates(
    postgres_url: str, _postgres_stock: DatabaseStock
) -> Iterator[_PostgresTemplates]:
    # depends on postgres_url and the stock: dropped before the server stops, and before the
    # stock finishes the drops of the copies
    templates = _PostgresTemplates(postgres_url, _postgres_stock)
    try:
        yield templates
    finally:
        templates.close()


@pytest.fixture
def table_copy(
    db_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., AbstractContextManager[str]]:
    """``with table_copy(metadata, is_async=False) as url:`` a new database of the test's
    backend with the tables of ``metadata`` and dalkit's, as ``create_all`` makes them (a
    PostgreSQL one is dropped at the end of the block); PostgreSQL starts only when needed.
    Its Database must ``serves()`` the schemas: the record create_all would have made."""

    @contextmanager
    def copy(metadata: MetaData, *, is_async: bool) -> Iterator[str]:
        if db_backend == "sqlite":
            templates: _SqliteTemplates = request.getfixturevalue("_sqlite_templates")
            path = tmp_path / "test.db"
            shutil.copyfile(templates.of(metadata), path)
            yield f"{'sqlite+aiosqlite' if is_async else 'sqlite'}:///{path}"
            return
        postgres: _PostgresTemplates = request.getfixturevalue("_postgres_templates")
        name = postgres.copy(metadata)
        driver = "postgresql+asyncpg" if is_async else "postgresql+psycopg"
        url = make_url(postgres.postgres_url).set(database=name, drivername=driver)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            postgres.stock.release(name)

    return copy
