"""Pool statistics, timeouts, leaks and reconnection, on real servers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database, PoolTimeoutError
from dalkit.testing import PostgresServer

STAT_KEYS = {
    "pool_size",
    "pool_available",
    "checked_out",
    "overflow",
    "requests_num",
    "requests_waiting",
    "requests_wait_ms",
    "requests_timeouts",
    "connections_num",
    "connections_lost",
    "usage_ms",
    "max_hold_ms",
}


def test_pool_stats_speak_psycopg_pools_vocabulary(db: Database) -> None:
    with db.connection() as connection:
        connection.exec_driver_sql("SELECT 1")
        during = db.pool_stats()
    after = db.pool_stats()
    assert set(after) >= STAT_KEYS
    assert during["checked_out"] == 1
    assert after["checked_out"] == 0
    assert after["pool_available"] == 1
    assert after["requests_num"] == 1
    assert after["connections_num"] == 1
    assert after["pool_size"] == db.config.pool_size


def test_hold_time_is_measured_from_checkout_to_checkin(db: Database) -> None:
    with db.engine.connect():
        time.sleep(0.05)
    stats = db.pool_stats()
    assert stats["max_hold_ms"] >= 50
    assert stats["usage_ms"] >= stats["max_hold_ms"]


def test_pop_stats_returns_the_counters_and_resets_them(db: Database) -> None:
    for _ in range(3):
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
    popped = db.pop_stats()["pool"]
    assert popped["requests_num"] == 3
    after = db.pool_stats()
    assert after["requests_num"] == 0
    assert after["usage_ms"] == 0
    # gauges describe the pool now, not a period: they survive the reset
    assert after["pool_available"] == 1


def _hold_connection(db: Database, barrier: threading.Barrier, hold_s: float) -> str:
    barrier.wait()
    try:
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
            time.sleep(hold_s)
    except PoolTimeoutError:
        return "timeout"
    return "ok"


@pytest.mark.postgres
def test_two_hundred_workers_over_five_connections_succeed_or_time_out(
    postgres_database_url: str,
) -> None:
    workers = 200
    db = Database(postgres_database_url, pool_size=5, max_overflow=0, pool_timeout=0.25)
    try:
        barrier = threading.Barrier(workers)
        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(lambda _: _hold_connection(db, barrier, 0.02), range(workers)))
        stats = db.pool_stats()
    finally:
        db.dispose()
    timeouts = outcomes.count("timeout")
    assert outcomes.count("ok") + timeouts == workers
    assert 0 < timeouts < workers
    assert stats["checked_out"] == 0
    assert stats["requests_waiting"] == 0
    assert stats["requests_num"] == workers
    assert stats["requests_timeouts"] == timeouts
    assert stats["connections_num"] <= 5
    # every timed-out request waited its full pool_timeout before giving up
    assert stats["requests_wait_ms"] >= timeouts * 250 * 0.9


@pytest.mark.postgres
async def test_two_hundred_tasks_over_five_async_connections_succeed_or_time_out(
    postgres_database_url: str,
) -> None:
    workers = 200
    db = AsyncDatabase(postgres_database_url, pool_size=5, max_overflow=0, pool_timeout=0.25)

    async def work() -> str:
        try:
            async with db.connection() as connection:
                await connection.exec_driver_sql("SELECT 1")
                await asyncio.sleep(0.02)
        except PoolTimeoutError:
            return "timeout"
        return "ok"

    try:
        outcomes = await asyncio.gather(*(work() for _ in range(workers)))
        stats = db.pool_stats()
    finally:
        await db.dispose()
    timeouts = outcomes.count("timeout")
    assert outcomes.count("ok") + timeouts == workers
    assert 0 < timeouts < workers
    assert stats["checked_out"] == 0
    assert stats["requests_num"] == workers
    assert stats["requests_timeouts"] == timeouts


def test_the_pool_timeout_error_names_pool_size_and_time_waited(sqlite_url: str) -> None:
    with Database(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.05) as db:
        with db.engine.connect(), pytest.raises(PoolTimeoutError) as caught:
            db.engine.connect()
    message = str(caught.value)
    assert "pool_size=1" in message
    assert "max_overflow=0" in message
    assert "waited" in message
    assert caught.value.waited_ms >= 45


def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        for record in caplog.records:
            if record.name == "dalkit.pool" and text in record.getMessage():
                return record.getMessage()
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"no dalkit.pool warning containing {text!r}")


def test_a_connection_held_past_the_leak_threshold_is_logged_with_its_checkout_stack(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dalkit.pool")
    with Database(db_url, leak_threshold_s=0.1) as db, db.engine.connect():
        message = _wait_for_log(caplog, "connection held for")
    assert "test_a_connection_held_past_the_leak_threshold" in message
    assert "db.engine.connect()" in message


async def test_an_async_leak_warning_shows_the_awaiting_code(
    async_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dalkit.pool")

    async def leaky_handler(db: AsyncDatabase) -> str:
        async with db.engine.connect():
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if any("connection held" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
            return _wait_for_log(caplog, "connection held for", timeout_s=0)

    async with AsyncDatabase(async_db_url, leak_threshold_s=0.1) as db:
        message = await leaky_handler(db)
    # the stack crosses SQLAlchemy's greenlet bridge back to the coroutine that checked out
    assert "in leaky_handler" in message


def test_no_leak_warning_for_connections_returned_in_time(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dalkit.pool")
    with Database(db_url, leak_threshold_s=0.2) as db:
        for _ in range(5):
            with db.connection() as connection:
                connection.exec_driver_sql("SELECT 1")
        time.sleep(0.4)
    assert not [r for r in caplog.records if r.name == "dalkit.pool"]


@pytest.mark.postgres
def test_a_server_restart_is_invisible_to_the_next_hundred_checkouts(
    postgres_server: PostgresServer, postgres_database_url: str
) -> None:
    with Database(postgres_database_url, pool_size=5) as db:
        connections = [db.engine.connect() for _ in range(5)]
        for connection in connections:
            connection.exec_driver_sql("SELECT 1")
            connection.close()
        assert db.pool_stats()["pool_available"] == 5
        postgres_server.restart()
        errors = 0
        for _ in range(100):
            try:
                with db.connection() as connection:
                    assert connection.execute(sa.text("SELECT 1")).scalar() == 1
            except Exception:
                errors += 1
        stats = db.pool_stats()
    assert errors == 0
    # pre-ping found the stale connections and replaced them
    assert stats["connections_lost"] >= 1


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_a_server_restart_is_invisible_to_async_checkouts(
    postgres_server: PostgresServer, postgres_database_url: str, driver: str
) -> None:
    url = sa.make_url(postgres_database_url).set(drivername=f"postgresql+{driver}")
    async with AsyncDatabase(url, pool_size=3) as db:
        connections = [await db.engine.connect() for _ in range(3)]
        for connection in connections:
            await connection.exec_driver_sql("SELECT 1")
            await connection.close()
        postgres_server.restart()
        for _ in range(100):
            async with db.connection() as connection:
                assert (await connection.exec_driver_sql("SELECT 1")).scalar() == 1


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_each_backend_ended_between_checkouts_is_replaced_unseen(
    postgres_database_url: str, driver: str
) -> None:
    # one pooled connection, whose backend is ended three times while it idles: each checkout
    # must notice, although the way the pool watches a connection is kept between checkouts
    url = sa.make_url(postgres_database_url).set(drivername=f"postgresql+{driver}")
    admin_url = sa.make_url(postgres_database_url).set(drivername="postgresql")
    pid_query = "SELECT pg_backend_pid()"
    async with AsyncDatabase(url, pool_size=1, max_overflow=0) as db:
        with psycopg.connect(admin_url.render_as_string(hide_password=False)) as admin:
            admin.autocommit = True
            pids = []
            for _ in range(4):
                async with db.connection() as connection:
                    pids.append((await connection.exec_driver_sql(pid_query)).scalar())
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pids[-1],))
        stats = db.pool_stats()
    assert len(set(pids)) == 4  # a fresh backend each time, and no checkout failed
    assert stats["connections_lost"] == 3
