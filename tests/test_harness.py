"""Tests of dalkit.testing itself: real servers, the backend fixtures and query counting."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from dalkit import AsyncDatabase, DalkitError, Database
from dalkit.testing import (
    PostgresServer,
    QueryCounter,
    RedisServer,
    ServerStartError,
    _server,
    assert_max_queries,
    count_queries,
    pgbouncer,
    postgres,
)
from dalkit.testing import redis as redis_server
from dalkit.testing._admin import AdminConnection
from dalkit.testing._server import LocalServer, scratch_base
from dalkit.testing.pgbouncer import PgBouncerServer
from dalkit.testing.postgres import create_database, drop_database
from dalkit.testing.replication import stop_immediately


def _refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _inner_session(pytester: pytest.Pytester, test_source: str) -> None:
    # The inner session has no pyproject; pin pytest-asyncio's loop scope so it stays quiet.
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_source)


def _run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Plugins the inner sessions do not use would be re-imported (and assert-rewritten)
    # for every run, which is most of their cost.
    quiet = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    return pytester.runpytest(*quiet, *args)


def _sqlite_engine_beginning_like_dalkit(url: str) -> Engine:
    # pysqlite's own implicit transactions are unreliable, so dalkit emits BEGIN
    # itself; this engine does the same to prove such statements are not counted.
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: sqlite3.Connection, record: object) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# --- PostgreSQL -------------------------------------------------------------


def test_postgres_listens_only_on_loopback(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)
    assert _refuses_connections("127.0.0.2", postgres_server.port)


def test_wrong_password_is_refused(postgres_url: str) -> None:
    wrong = make_url(postgres_url).set(password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong.render_as_string(hide_password=False), connect_timeout=5)


def test_restart_brings_the_server_back_with_a_new_postmaster(
    postgres_server: PostgresServer,
) -> None:
    query = "SELECT pg_postmaster_start_time()"
    name = f"t_{uuid.uuid4().hex}"
    with (
        psycopg.connect(postgres_server.url) as old,
        closing(AdminConnection(postgres_server.url)) as admin,
    ):
        admin.create(name)  # the plugin's one connection for the per-test databases
        before = old.execute(query).fetchone()
        postgres_server.restart()
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
        admin.drop(name)  # on a new connection: the restart ended the old one
    with psycopg.connect(postgres_server.url) as new:
        after = new.execute(query).fetchone()
        gone = new.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name])
        assert gone.fetchone() == (0,)
    assert before is not None
    assert after is not None
    assert after[0] > before[0]


@pytest.mark.postgres
def test_restart_brings_back_a_server_that_crashed() -> None:
    with PostgresServer() as server:
        stop_immediately(server)
        server.restart()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_repr_does_not_show_the_password(postgres_server: PostgresServer) -> None:
    assert postgres_server.password not in repr(postgres_server)
    assert str(postgres_server.port) in repr(postgres_server)


@pytest.mark.postgres
def test_failed_start_reports_the_server_log_without_the_password() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = PostgresServer(port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="server log") as failure:
            server.start()
    assert "Address already in use" in str(failure.value)
    assert server.password not in str(failure.value)
    assert not server.running


def test_missing_server_binaries_raise_a_typed_error_naming_them(tmp_path: Path) -> None:
    (tmp_path / "pg_ctl").touch()  # a client-only install: no initdb, no postgres
    with pytest.raises(ServerStartError, match="no initdb, postgres in ") as failure:
        PostgresServer(bin_dir=tmp_path).start()
    assert isinstance(failure.value, DalkitError)
    with pytest.raises(ServerStartError, match="no redis-server at "):
        RedisServer(executable=tmp_path / "redis-server").start()


def test_without_postgresql_installed_the_test_fails_saying_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner_session(
        pytester,
        """
        import pytest

        @pytest.mark.parametrize("fixture", ["postgres_url", "replication"])
        def test_needs_postgres(request, fixture):
            request.getfixturevalue(fixture)
        """,
    )
    monkeypatch.delenv("DALKIT_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setattr(postgres, "_DEBIAN_BIN_DIRS", pytester.path / "no-postgresql")
    monkeypatch.setenv("PATH", str(pytester.path))
    result = _run_inner(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*could not start PostgreSQL for the tests: no PostgreSQL server binaries (initdb*",
            "*could not start a replicated PostgreSQL pair: no PostgreSQL server binaries (*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.fixture
def first_port_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """The first port the harness chooses is taken by another process before the server
    binds it, as a parallel run (or an outgoing connection's source port) may do."""
    squatters: list[socket.socket] = []
    choose = _server.free_port

    def taken_once() -> int:
        port = choose()
        if not squatters:
            squatter = socket.socket()
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            squatters.append(squatter)
        return port

    for module in (_server, postgres, pgbouncer, redis_server):  # wherever it is called from
        monkeypatch.setattr(module, "free_port", taken_once, raising=False)
    yield squatters
    for squatter in squatters:
        squatter.close()


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "redis", "pgbouncer"])
def test_a_port_taken_before_the_server_binds_it_is_chosen_again(
    kind: str, first_port_taken: list[socket.socket], postgres_server: PostgresServer
) -> None:
    makers: dict[str, Callable[[], LocalServer]] = {
        "postgres": PostgresServer,
        "redis": RedisServer,
        "pgbouncer": lambda: PgBouncerServer(postgres_server),
    }
    server = makers[kind]()
    with server:
        assert first_port_taken, "the harness chose no port"
        assert server.port != first_port_taken[0].getsockname()[1]
        assert not _refuses_connections("127.0.0.1", server.port)


@pytest.mark.postgres
def test_a_pgbouncer_that_cannot_start_is_reported_with_its_log(
    postgres_server: PostgresServer,
) -> None:
    bouncer = PgBouncerServer(postgres_server, pool_mode="no-such-mode")
    with pytest.raises(ServerStartError, match="PgBouncer did not accept") as failure:
        bouncer.start()
    assert "no-such-mode" in str(failure.value)  # its log says what it refused
    assert postgres_server.password not in str(failure.value)
    assert not bouncer.running


def test_dropping_a_database_disconnects_its_users(postgres_url: str) -> None:
    name = f"t_{uuid.uuid4().hex}"
    url = create_database(postgres_url, name)
    with psycopg.connect(url) as user:
        drop_database(postgres_url, name)
        with pytest.raises(psycopg.OperationalError):
            user.execute("SELECT 1")
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()
    assert row == (0,)


def test_server_files_go_to_the_ram_disk_when_it_has_room(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setattr(_server, "RAM_DISK", tmp_path)
    monkeypatch.setattr(_server, "RAM_DISK_MIN_FREE", 0)
    assert scratch_base() == str(tmp_path)

    monkeypatch.setattr(_server, "RAM_DISK_MIN_FREE", shutil.disk_usage(tmp_path).free + 2**30)
    assert scratch_base() is None  # too small (Docker's 64 MB /dev/shm): the temp directory

    monkeypatch.setattr(_server, "RAM_DISK_MIN_FREE", 0)
    monkeypatch.setattr(_server, "RAM_DISK", tmp_path / "missing")
    assert scratch_base() is None

    monkeypatch.setattr(_server, "RAM_DISK", tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "chosen"))
    assert scratch_base() is None  # the user's TMPDIR wins


def test_the_session_cluster_lives_on_the_ram_disk_when_there_is_one(
    postgres_server: PostgresServer,
) -> None:
    base = scratch_base()
    if base is None:
        pytest.skip("no RAM disk with room here (or TMPDIR is set)")
    assert postgres_server.data_dir.resolve().is_relative_to(Path(base).resolve())
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    assert Path(row[0]).resolve() == postgres_server.data_dir.resolve()


def test_database_names_that_are_not_plain_identifiers_are_rejected() -> None:
    with pytest.raises(ValueError, match="plain database name"):
        create_database("postgresql://nobody@127.0.0.1:1/postgres", 'x"; DROP TABLE y; --')


# --- Backend fixtures -------------------------------------------------------


def test_backend_fixtures_agree(db_backend: str, db_url: str, async_db_url: str) -> None:
    expected = {
        "sqlite": ("sqlite", "sqlite+aiosqlite"),
        "postgres": ("postgresql+psycopg", "postgresql+asyncpg"),
    }[db_backend]
    assert (make_url(db_url).drivername, make_url(async_db_url).drivername) == expected
    assert make_url(db_url).database == make_url(async_db_url).database


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_an_empty_database(db_url: str, attempt: int) -> None:
    engine = create_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE left_behind (attempt INTEGER)"))
            conn.execute(text("INSERT INTO left_behind VALUES (:a)"), {"a": attempt})
    finally:
        engine.dispose()


async def test_async_url_reaches_the_same_database_as_the_sync_url(
    db_url: str, async_db_url: str
) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE shared (n INTEGER)"))
            conn.execute(text("INSERT INTO shared VALUES (42)"))
    finally:
        engine.dispose()
    async_engine = create_async_engine(async_db_url)
    try:
        async with async_engine.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM shared"))).scalar_one() == 42
    finally:
        await async_engine.dispose()


def test_db_fixture_is_a_working_dalkit_database(db: Database, db_backend: str) -> None:
    with db.connection() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert db.engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[db_backend]


async def test_async_db_fixture_is_a_working_dalkit_database(async_db: AsyncDatabase) -> None:
    async with async_db.connection() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


def test_sqlite_url_points_into_the_test_tmp_path(sqlite_url: str, tmp_path: object) -> None:
    assert make_url(sqlite_url).database == f"{tmp_path}/test.db"


def test_external_postgres_url_is_used_and_sqlite_runs_never_touch_it(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner_session(
        pytester,
        """
        from sqlalchemy.engine import make_url

        def test_uses_external(postgres_url, db_url, db_backend):
            assert postgres_url.startswith("postgresql://")
            if db_backend == "postgres":
                assert make_url(db_url).port == make_url(postgres_url).port
        """,
    )
    monkeypatch.setenv(
        "DALKIT_TEST_POSTGRES_URL", postgres_url.replace("postgresql", "postgresql+psycopg")
    )
    _run_inner(pytester).assert_outcomes(passed=2)


def test_unreachable_postgres_fails_the_test_instead_of_skipping(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner_session(
        pytester,
        """
        def test_needs_a_database(db_url):
            pass
        """,
    )
    monkeypatch.setenv(
        "DALKIT_TEST_POSTGRES_URL", "postgresql://dalkit:hunter2@127.0.0.1:1/postgres"
    )
    # Selecting the SQLite run only must not try to reach PostgreSQL at all.
    _run_inner(pytester, "-k", "sqlite").assert_outcomes(passed=1)
    result = _run_inner(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*could not create a test database on*127.0.0.1:1*"])
    assert "hunter2" not in result.stdout.str()


def test_a_refused_rollback_database_fails_the_test_without_showing_the_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner_session(
        pytester,
        """
        import pytest

        def test_sync(db_rollback):
            pass

        @pytest.mark.asyncio
        async def test_async(async_db_rollback):
            pass
        """,
    )
    monkeypatch.setenv(
        "DALKIT_TEST_POSTGRES_URL", "postgresql://dalkit:hunter2@127.0.0.1:1/postgres"
    )
    # the arguments of psycopg.connect() in the traceback held the password
    result = _run_inner(pytester, "-k", "postgres")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*could not create a test database on*127.0.0.1:1*"])
    assert "hunter2" not in result.stdout.str()


def test_an_at_sign_in_the_external_urls_password_needs_no_encoding(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as in DALKIT_DATABASE_URL; SQLAlchemy's own parser took "Secret9@127.0.0.1" for the host
    role = f"at_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'my@Secret9'")
        try:
            server = make_url(postgres_url)
            external = f"postgresql://{role}:my@Secret9@{server.host}:{server.port}/postgres"
            monkeypatch.setenv("DALKIT_TEST_POSTGRES_URL", external)
            _inner_session(pytester, "def test_creates(postgres_database_url):\n    pass\n")
            _run_inner(pytester).assert_outcomes(passed=1)
        finally:
            admin.execute(f"DROP ROLE {role}")


def test_postgres_server_fixture_refuses_an_external_url(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner_session(
        pytester,
        """
        def test_wants_to_restart(postgres_server):
            pass
        """,
    )
    monkeypatch.setenv("DALKIT_TEST_POSTGRES_URL", "postgresql://dalkit:x@127.0.0.1:1/postgres")
    result = _run_inner(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*DALKIT_TEST_POSTGRES_URL points at an external one*"])


def test_postgres_marker_is_registered(pytester: pytest.Pytester) -> None:
    _inner_session(pytester, "")
    result = _run_inner(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.postgres:*PostgreSQL*"])


def test_not_postgres_leaves_out_every_test_that_needs_postgres(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner_session(
        pytester,
        """
        def test_direct(postgres_url):
            pass

        def test_either_backend(db_url):
            pass
        """,
    )
    monkeypatch.setenv("DALKIT_TEST_POSTGRES_URL", "postgresql://dalkit:x@127.0.0.1:1/postgres")
    result = _run_inner(pytester, "-m", "not postgres", "-v")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["*test_either_backend?sqlite? PASSED*"])


def test_the_configuration_the_testing_docs_recommend_runs_a_suite(
    pytester: pytest.Pytester,
) -> None:
    # docs/testing.md's block, as a user copies it into the pyproject.toml of their project
    docs = (Path(__file__).parents[1] / "docs" / "testing.md").read_text()
    block = docs.split("## Configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    pytester.makepyprojecttoml(block)
    pytester.makepyfile(
        """
        from dalkit import AsyncDatabase, Database, DalkitError

        def test_sync(db: Database) -> None:
            assert db.health_check().ok

        async def test_async(async_db: AsyncDatabase) -> None:
            assert (await async_db.health_check()).ok
        """
    )
    result = _run_inner(pytester, "-m", "not postgres")
    result.assert_outcomes(passed=2, deselected=2)


# --- Redis ------------------------------------------------------------------


def test_redis_answers_ping(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()


def test_redis_listens_only_on_loopback_and_keeps_nothing_on_disk(
    redis_server: RedisServer,
) -> None:
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        config = client.config_get("bind", "save", "appendonly")
    assert config == {"bind": "127.0.0.1", "save": "", "appendonly": "no"}
    assert _refuses_connections("127.0.0.2", redis_server.port)


def test_failed_redis_start_reports_the_server_log() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = RedisServer(port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="server log"):
            server.start()
    assert not server.running


def test_stopped_redis_server_is_gone() -> None:
    server = RedisServer()
    with server:
        port = server.port
    assert not server.running
    assert _refuses_connections("127.0.0.1", port)


# --- Query counting ---------------------------------------------------------


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlite_url, pool_size=8)
    yield engine
    engine.dispose()


def test_count_queries_counts_statements_on_sqlite(sqlite_engine: Engine) -> None:
    with count_queries(sqlite_engine) as queries, sqlite_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        conn.execute(text("SELECT 2"))
    assert queries.count == 2
    assert queries.statements == ["SELECT 1", "SELECT 2"]


def test_count_queries_ignores_begin_and_agrees_across_backends(
    db_backend: str, db_url: str
) -> None:
    if db_backend == "sqlite":
        engine = _sqlite_engine_beginning_like_dalkit(db_url)
    else:
        engine = create_engine(db_url)
    try:
        with count_queries(engine) as queries, engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            conn.execute(text("SELECT n FROM t"))
        assert queries.count == 3, queries.statements
    finally:
        engine.dispose()


def test_count_queries_on_a_dalkit_database_agrees_across_backends(db: Database) -> None:
    with count_queries(db) as queries, db.connection() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.execute(text("SELECT n FROM t"))
    assert queries.count == 3, queries.statements


async def test_count_queries_on_an_async_dalkit_database(async_db: AsyncDatabase) -> None:
    with count_queries(async_db) as queries:
        async with async_db.connection() as conn:
            await conn.execute(text("SELECT 1"))
    assert queries.statements == ["SELECT 1"]


def test_transaction_starts_are_not_counted() -> None:
    counter = QueryCounter()
    for statement in ["BEGIN", "begin immediate", " BEGIN DEFERRED ", "BEGIN EXCLUSIVE;"]:
        counter.record(statement)
    counter.record("BEGINNING_TABLE_SCAN")
    assert counter.statements == ["BEGINNING_TABLE_SCAN"]


def test_count_queries_sees_connections_opened_before_the_block(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with count_queries(sqlite_engine) as queries:
            conn.execute(text("SELECT 2"))
    assert queries.statements == ["SELECT 2"]


def test_count_queries_stops_listening_after_the_block(sqlite_engine: Engine) -> None:
    with count_queries(sqlite_engine) as queries, sqlite_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with sqlite_engine.connect() as conn:
        conn.execute(text("SELECT 2"))
    assert queries.count == 1


async def test_count_queries_accepts_an_async_engine(async_db_url: str) -> None:
    engine = create_async_engine(async_db_url)
    try:
        with count_queries(engine) as queries:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert queries.statements == ["SELECT 1"]
    finally:
        await engine.dispose()


def test_count_queries_accepts_anything_with_an_engine(sqlite_engine: Engine) -> None:
    class Holder:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

    with count_queries(Holder(sqlite_engine)) as queries, sqlite_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert queries.count == 1


def test_count_queries_rejects_what_has_no_engine() -> None:
    with pytest.raises(TypeError, match="Engine"), count_queries(object()):  # type: ignore[arg-type]
        pass


def test_count_queries_counts_every_statement_from_many_threads(sqlite_engine: Engine) -> None:
    threads, per_thread = 8, 25

    def work() -> None:
        with sqlite_engine.connect() as conn:
            for _ in range(per_thread):
                conn.execute(text("SELECT 1"))

    with count_queries(sqlite_engine) as queries:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert queries.count == threads * per_thread


def test_assert_max_queries_lists_the_statements_when_over_the_limit(
    sqlite_engine: Engine,
) -> None:
    def two_queries() -> None:
        with assert_max_queries(sqlite_engine, 1), sqlite_engine.connect() as conn:
            conn.execute(text("SELECT 'first' AS first"))
            conn.execute(text("SELECT 'second' AS second"))

    with pytest.raises(AssertionError) as failure:
        two_queries()
    message = str(failure.value)
    assert "expected at most 1 queries, 2 ran" in message
    assert "1. SELECT '***' AS first" in message  # a literal may be a secret: masked
    assert "2. SELECT '***' AS second" in message


def test_assert_max_queries_passes_within_the_limit(sqlite_engine: Engine) -> None:
    with assert_max_queries(sqlite_engine, 2) as queries, sqlite_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert queries.count == 1


def test_assert_max_queries_lets_the_blocks_own_error_through(sqlite_engine: Engine) -> None:
    def query_then_fail() -> None:
        with assert_max_queries(sqlite_engine, 0), sqlite_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        query_then_fail()


def test_the_rollback_fixtures_end_cleanly_after_the_session_server_stopped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # db_rollback asks for the session's server lazily, after its own session fixture began:
    # pytest stops the server first, and the shared database went with it
    monkeypatch.delenv("DALKIT_TEST_POSTGRES_URL", raising=False)
    _inner_session(
        pytester,
        """
        from sqlalchemy import text

        def test_select(db_rollback):
            assert db_rollback.execute(text("SELECT 1")).scalar() == 1
        """,
    )
    _run_inner(pytester).assert_outcomes(passed=2)
