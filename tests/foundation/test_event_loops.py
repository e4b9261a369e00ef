"""An AsyncDatabase used from more than one event loop: ``asyncio.run()`` again and
pytest-asyncio's loop per test get a fresh pool (the old loop's connections closed as it shut
down), a loop that still runs in another thread is refused with EventLoopError. Each test runs
its loops itself: it is a plain function, outside any loop."""

from __future__ import annotations

import asyncio
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, ConfigurationError, EventLoopError

from .activity import server_connections

DRIVERS = [
    "aiosqlite",
    pytest.param("asyncpg", marks=pytest.mark.postgres),
    pytest.param("psycopg", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """The async driver under test."""
    name: str = request.param
    return name


@pytest.fixture
def app_name() -> str:
    """The application_name that tells this test's connections on the server."""
    return f"loops-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(driver: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An async URL of an empty database for ``driver``."""
    if driver == "aiosqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'loops.db'}"
    base: str = request.getfixturevalue("postgres_database_url")
    return make_url(base).set(drivername=f"postgresql+{driver}").render_as_string(False)


@pytest.fixture
def open_connections(
    driver: str, request: pytest.FixtureRequest, app_name: str
) -> Callable[[], int]:
    """``open_connections()``: the server's connections of this test (0 for SQLite)."""
    if driver == "aiosqlite":
        return lambda: 0
    base: str = request.getfixturevalue("postgres_database_url")
    return lambda: server_connections(base, app_name)


def _database(url: str, app_name: str) -> AsyncDatabase:
    # one connection: the second and third transactions queue for it, on the pool's asyncio
    # queue, which binds itself to the loop it first waits on
    return AsyncDatabase(url, pool_size=1, max_overflow=0, application_name=app_name)


@contextmanager
def _nothing_warned() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert [str(warning.message) for warning in caught] == []


async def _three_transactions(db: AsyncDatabase) -> list[object]:
    async def one() -> object:
        async with db.transaction():
            await asyncio.sleep(0.01)
            rows = await db.sql("SELECT 1 AS one")
            return rows[0]["one"]

    return list(await asyncio.gather(one(), one(), one()))


def test_asyncio_run_again_gets_a_fresh_pool_and_each_loop_closes_its_connections(
    url: str, app_name: str, open_connections: Callable[[], int]
) -> None:
    with _nothing_warned():
        db = _database(url, app_name)
        first = asyncio.run(_three_transactions(db))
        after_first = open_connections()
        # raised 'attached to a different loop' (asyncpg) or 'bound to a different event loop'
        second = asyncio.run(_three_transactions(db))
        after_second = open_connections()
        asyncio.run(db.dispose())
    assert (first, second) == ([1, 1, 1], [1, 1, 1])
    assert (after_first, after_second) == (0, 0)  # closed as each loop shut down


def test_a_stopped_loop_hands_over_to_the_next_and_closes_its_own_as_it_shuts_down(
    url: str, app_name: str, open_connections: Callable[[], int]
) -> None:
    # pytest-asyncio's session loop waits, stopped, while each test's own loop runs
    with _nothing_warned():
        db = _database(url, app_name)
        with asyncio.Runner() as session_loop:
            session_loop.run(_three_transactions(db))
            for _ in range(2):
                with asyncio.Runner() as test_loop:
                    assert test_loop.run(_three_transactions(db)) == [1, 1, 1]
            assert session_loop.run(_three_transactions(db)) == [1, 1, 1]
            session_loop.run(db.dispose())
            assert open_connections() == 0  # the session loop's too, left behind by the tests'
        assert open_connections() == 0


def test_a_loop_still_running_in_another_thread_is_refused_with_event_loop_error(
    url: str, app_name: str
) -> None:
    db = _database(url, app_name)
    used, release = threading.Event(), threading.Event()

    async def hold_the_pool() -> None:
        await db.sql("SELECT 1")
        used.set()
        await asyncio.to_thread(release.wait, 30)  # the loop runs on meanwhile
        await db.dispose()

    other = threading.Thread(target=asyncio.run, args=(hold_the_pool(),))
    other.start()
    try:
        assert used.wait(30)
        # psycopg and aiosqlite went on sharing the pool (and its loop-bound queue) silently
        with pytest.raises(EventLoopError, match="one AsyncDatabase per event loop") as caught:
            asyncio.run(db.sql("SELECT 1"))
        assert isinstance(caught.value, ConfigurationError)
    finally:
        release.set()
        other.join(30)
    assert asyncio.run(db.sql("SELECT 1 AS one")) == [{"one": 1}]  # that loop has ended now
    asyncio.run(db.dispose())


def test_an_in_memory_sqlite_database_keeps_its_data_across_loops() -> None:
    db = AsyncDatabase("sqlite+aiosqlite://")

    async def create() -> None:
        await db.sql("CREATE TABLE loop_notes (body TEXT)")
        await db.sql("INSERT INTO loop_notes VALUES ('kept')")
        await _three_transactions(db)  # the pool's queue waits on this loop

    asyncio.run(create())
    assert asyncio.run(db.sql("SELECT body FROM loop_notes")) == [{"body": "kept"}]
    assert asyncio.run(_three_transactions(db)) == [1, 1, 1]
    asyncio.run(db.dispose())


def test_a_module_level_database_serves_pytest_asyncio_loop_per_test(
    pytester: pytest.Pytester, url: str
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile(
        f"""
        from dalkit import AsyncDatabase

        db = AsyncDatabase({url!r}, pool_size=1)

        async def test_first():
            assert await db.sql("SELECT 1 AS one") == [{{"one": 1}}]

        async def test_second():
            assert await db.sql("SELECT 1 AS one") == [{{"one": 1}}]
        """
    )
    quiet = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    pytester.runpytest(*quiet).assert_outcomes(passed=2)


def test_aiosqlite_connections_of_a_closed_loop_are_closed_on_the_loop_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # they were stopped without a loop: aiosqlite's thread then called back the loop in use,
    # which asyncio.run() had often closed by then ('Event loop is closed' in that thread; a
    # race, lost about once in ten disposals on the dev machine, hence the repetitions)
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    before = set(threading.enumerate())
    for _ in range(40):
        memory = AsyncDatabase("sqlite+aiosqlite://")  # keeps its connection for the next loop
        asyncio.run(memory.sql("SELECT 1"))
        asyncio.run(memory.dispose())
    on_file = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'loops.db'}")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(on_file.sql("SELECT 1"))
    loop.close()  # without shutdown_asyncgens(): its connection is still open
    asyncio.run(on_file.sql("SELECT 1"))
    asyncio.run(on_file.dispose())
    for thread in set(threading.enumerate()) - before:  # aiosqlite's, ending
        thread.join(10)
    assert failures == []


def test_tasks_that_check_out_together_on_a_new_loop_while_the_old_connections_close(
    tmp_path: Path,
) -> None:
    # closing the old loop's aiosqlite connections awaits their thread; a lock held meanwhile
    # stopped the loop's thread for good at the next task's checkout
    db = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'loops.db'}", pool_size=3)

    async def together() -> list[object]:
        return list(await asyncio.gather(*(db.sql("SELECT 1 AS one") for _ in range(3))))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(together())
    loop.close()  # without shutdown_asyncgens(): three idle connections are still open
    answers: list[object] = []
    worker = threading.Thread(target=lambda: answers.append(asyncio.run(together())), daemon=True)
    worker.start()
    worker.join(30)
    assert answers == [[[{"one": 1}]] * 3]
    asyncio.run(db.dispose())
