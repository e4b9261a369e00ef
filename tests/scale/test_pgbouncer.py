"""dalkit behind a real PgBouncer in transaction pooling mode (10 server connections): the
repository, transaction and bulk paths on psycopg and asyncpg; 100 concurrent clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, AsyncRepository, Database, Repository
from dalkit.engine.pgbouncer import PgBouncerError, check_session_lock_allowed
from dalkit.errors import ConfigurationError

from .helpers import WAIT, MonitorProbes, wait_until_async
from .models import Base, Widget

#: replica probes the monitor made (every 20 ms, each waiting its turn among 20 clients for
#: one of PgBouncer's 10 server connections) in the async PgBouncer test's 3 s of load: 11-21
#: with two CPU burners beside it. The fewest: more made the test 3 s -> 10 s at a load of 6
PROBES_UNDER_LOAD = 10


class Widgets(Repository[Widget]):
    pass


class AsyncWidgets(AsyncRepository[Widget]):
    pass


@pytest.fixture
def db(pgbouncer_database_url: str) -> Iterator[Database]:
    url = pgbouncer_database_url.replace("postgresql://", "postgresql+psycopg://")
    database = Database(url, pgbouncer=True, pool_size=20, max_overflow=100)
    database.create_all(Base.metadata)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
async def async_db(pgbouncer_database_url: str) -> AsyncIterator[AsyncDatabase]:
    url = pgbouncer_database_url.replace("postgresql://", "postgresql+asyncpg://")
    database = AsyncDatabase(url, pgbouncer=True, pool_size=20, max_overflow=100)
    await database.create_all(Base.metadata)
    try:
        yield database
    finally:
        await database.dispose()


def test_repository_transaction_and_bulk_paths_work_through_pgbouncer(db: Database) -> None:
    for _ in range(3):  # more transactions than a prepared statement would survive
        with db.transaction() as session:
            widgets = Widgets(session)
            widgets.bulk_insert([{"name": f"w{i}", "size": i} for i in range(200)])
    with db.transaction() as session:
        widgets = Widgets(session)
        added = widgets.add(Widget(name="extra", size=1))
        widgets.update(added, size=2)
        assert widgets.count() == 601
        assert [w.size for w in widgets.find(name="extra")] == [2]
        widgets.delete(added)
    with pytest.raises(RuntimeError), db.transaction() as session:
        Widgets(session).add(Widget(name="rolled back"))
        raise RuntimeError
    with db.transaction(read_only=True) as session:
        assert Widgets(session).count(name="rolled back") == 0
    with db.transaction() as session:
        with pytest.raises(RuntimeError), db.transaction(propagation="nested") as inner:
            Widgets(inner).add(Widget(name="in a savepoint"))
            raise RuntimeError
        assert Widgets(session).count() == 600

    @db.transactional(isolation="REPEATABLE READ")
    def total(session: Session) -> int:
        return Widgets(session).count()

    assert total() == 600


async def test_async_repository_transaction_and_bulk_paths_work_through_pgbouncer(
    async_db: AsyncDatabase,
) -> None:
    db = async_db
    for _ in range(3):
        async with db.transaction() as session:
            await AsyncWidgets(session).bulk_insert(
                [{"name": f"w{i}", "size": i} for i in range(200)]
            )
    async with db.transaction() as session:
        widgets = AsyncWidgets(session)
        added = await widgets.add(Widget(name="extra", size=1))
        await widgets.update(added, size=2)
        assert await widgets.count() == 601
        await widgets.delete(added)
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await AsyncWidgets(session).add(Widget(name="rolled back"))
            raise RuntimeError
    async with db.transaction(read_only=True) as session:
        assert await AsyncWidgets(session).count(name="rolled back") == 0
    async with db.transaction() as session:
        with pytest.raises(RuntimeError):
            async with db.transaction(propagation="nested") as inner:
                await AsyncWidgets(inner).add(Widget(name="in a savepoint"))
                raise RuntimeError
        assert await AsyncWidgets(session).count() == 600
    for _ in range(20):  # reads outside a transaction block (deferred BEGIN) too
        assert (await db.sql("SELECT count(*) AS n FROM widgets"))[0]["n"] == 600


async def _client(db: AsyncDatabase, client: int, leaks: list[str]) -> None:
    for round_ in range(5):
        async with db.transaction() as session:
            seen = (await session.execute(text("SHOW statement_timeout"))).scalar_one()
            if seen != "0":
                leaks.append(seen)
            # a value of its own per client, long enough that a starved machine never hits it:
            # what is checked is that no other client's transaction ever sees it
            await session.execute(text(f"SET LOCAL statement_timeout = '{30000 + client}ms'"))
            await session.execute(
                text("INSERT INTO widgets (name, size) VALUES (:n, :s)"),
                {"n": f"c{client}", "s": round_},
            )
            count = (
                await session.execute(
                    text("SELECT count(*) FROM widgets WHERE name = :n"), {"n": f"c{client}"}
                )
            ).scalar_one()
            assert count == round_ + 1


@pytest.mark.slow
async def test_a_hundred_clients_share_ten_server_connections_without_errors_or_leaks(
    async_db: AsyncDatabase, pgbouncer_database_url: str
) -> None:
    leaks: list[str] = []
    await asyncio.gather(*(_client(async_db, client, leaks) for client in range(100)))
    assert leaks == []
    assert async_db.pool_stats()["connections_num"] >= 50  # many clients really were there
    async with async_db.transaction() as session:
        total = (await session.execute(text("SELECT count(*) FROM widgets"))).scalar_one()
    assert total == 500


@pytest.mark.slow
def test_a_hundred_threads_through_pgbouncer_with_psycopg(db: Database) -> None:
    errors: list[BaseException] = []
    leaks: list[str] = []

    def client(number: int) -> None:
        try:
            for _ in range(5):
                with db.transaction() as session:
                    seen = session.execute(text("SHOW statement_timeout")).scalar_one()
                    if seen != "0":
                        leaks.append(seen)
                    session.execute(text(f"SET LOCAL statement_timeout = '{30000 + number}ms'"))
                    session.execute(
                        text("INSERT INTO widgets (name, size) VALUES (:n, 0)"), {"n": "t"}
                    )
        except BaseException as error:  # collected: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert leaks == []
    with db.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM widgets")).scalar_one() == 500


def test_the_server_side_stays_at_ten_connections(
    db: Database, pgbouncer_database_url: str, postgres_url: str
) -> None:
    database = pgbouncer_database_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        connections = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    assert connections is not None
    assert connections[0] <= 10


def test_session_state_and_session_locks_are_refused() -> None:
    url = "postgresql://u:p@127.0.0.1:6432/app"
    with pytest.raises(PgBouncerError, match="SET LOCAL statement_timeout"):
        Database(url, pgbouncer=True, statement_timeout_ms=500)
    with pytest.raises(PgBouncerError, match="SET LOCAL"):
        Database(url, pgbouncer=True, connect_args={"options": "-c search_path=x"})
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        Database("sqlite:///x.db", pgbouncer=True)
    behind = Database(url, pgbouncer=True)
    with pytest.raises(PgBouncerError, match="pg_try_advisory_xact_lock"):
        check_session_lock_allowed(behind)
    check_session_lock_allowed(Database(url))  # not behind PgBouncer: allowed
    assert behind.engine.dialect.name == "postgresql"


async def test_autocommit_on_asyncpg_is_refused_with_a_reason(async_db: AsyncDatabase) -> None:
    # asyncpg's prepare and execute steps outside a transaction block may reach two server
    # connections: "prepared statement ... does not exist", at random under load
    with pytest.raises(PgBouncerError, match="AUTOCOMMIT"):
        async with async_db.transaction(isolation="AUTOCOMMIT") as session:
            await session.execute(text("SELECT 1"))
    with pytest.raises(PgBouncerError, match="AUTOCOMMIT"):
        await async_db.transactional(isolation="AUTOCOMMIT").run(_select_one)
    assert (await async_db.sql("SELECT 1 AS one")) == [{"one": 1}]


async def _select_one(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT 1"))).scalar_one())


@pytest.mark.slow
async def test_the_async_replica_monitor_through_pgbouncer_keeps_a_healthy_replica_in(
    pgbouncer_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the primary stands in for its replica (the monitor reads its position either way); 20
    # clients keep PgBouncer's 10 server connections changing hands between the probes' steps
    url = pgbouncer_database_url.replace("postgresql://", "postgresql+asyncpg://")
    db = AsyncDatabase(
        url, pgbouncer=True, replicas=[url], replica_monitor_interval_s=0.02, pool_size=20
    )
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            async with db.transaction() as session:
                await session.execute(text("SELECT pg_sleep(0.001)"))

    try:
        async with db.transaction(read_only=True) as session:  # starts the monitor
            await session.execute(text("SELECT 1"))
        probes = MonitorProbes(db.replica_engines)
        clients = [asyncio.create_task(load()) for _ in range(20)]
        await asyncio.sleep(3)
        # and as many probes under the load as a quiet machine makes in those 3 s: a loaded
        # one makes fewer, and the test would pass having tried little
        await wait_until_async(lambda: probes.count >= PROBES_UNDER_LOAD, seen=lambda: probes.count)
        probes.close()
        stop.set()
        await asyncio.gather(*clients)
        # a probe a loaded machine stalls past its time limit ejects the replica until the
        # next round: the monitor doing its job, not the failure this test guards against
        # ('prepared statement ... does not exist' from statements split across two server
        # connections), which no round mends
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            (replica,) = db.get_stats()["replicas"]["replicas"].values()
            if replica["state"] == "healthy":
                break
            await asyncio.sleep(0.05)
    finally:
        await db.dispose()
    assert replica["state"] == "healthy"
    ejections = [r.getMessage() for r in caplog.records if "ejected" in r.getMessage()]
    assert all("TimeoutError" in message for message in ejections), ejections


async def test_an_async_url_naming_no_driver_gets_asyncpg_s_arguments(
    pgbouncer_database_url: str,
) -> None:
    # it got psycopg's prepare_threshold: a raw TypeError from asyncpg.connect() at the first
    # query, and no statement_cache_size=0
    async with AsyncDatabase(pgbouncer_database_url, pgbouncer=True) as db:
        for _ in range(3):
            assert (await db.sql("SELECT 1 AS one")) == [{"one": 1}]
        assert db.config.connect_args["statement_cache_size"] == 0


async def test_async_replicas_of_a_url_naming_no_driver_get_asyncpg_s_arguments(
    pgbouncer_database_url: str,
) -> None:
    # the replicas got psycopg's prepare_threshold: AsyncDatabase() raised ConfigurationError
    url = pgbouncer_database_url
    async with AsyncDatabase(url, pgbouncer=True, replicas=[url]) as db:
        async with db.transaction(read_only=True) as session:
            assert await _select_one(session) == 1
