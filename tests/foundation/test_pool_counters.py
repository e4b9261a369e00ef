"""The pool counters stay exact under threads, tasks and concurrent resets (their hot path takes
no lock), the pool adds no per-statement listener, and upkeep survives a dispose()."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.engine.pool import PoolMetrics, install, instrumented_pool_class
from dalkit.engine.pool_metrics import FOLD_AT

THREADS = 8
# enough checkins that folds run on the worker threads, not only in snapshot()
PER_THREAD = FOLD_AT // 2


def _checkouts(db: Database, count: int) -> None:
    for _ in range(count):
        with db.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")


def test_counters_lose_no_checkout_across_threads_and_concurrent_resets(db_url: str) -> None:
    with Database(db_url, pool_size=3, max_overflow=0, pool_timeout=30) as db:
        done = threading.Event()
        popped: list[dict[str, int | float]] = []

        def pop_until_done() -> None:
            # a pause between resets: a busy loop here holds the GIL away from the workers and
            # made this test take a minute on PostgreSQL; thousands of resets still interleave
            while not done.wait(0.0002):
                popped.append(db.pop_stats()["pool"])

        popper = threading.Thread(target=pop_until_done)
        popper.start()
        try:
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(lambda _: _checkouts(db, PER_THREAD), range(THREADS)))
        finally:
            done.set()
            popper.join()
        final = db.pool_stats()
    periods = [*popped, final]
    assert sum(1 for period in popped if period["requests_num"]) > 10  # resets did interleave
    # each checkout is counted in exactly one period: none lost, none counted twice
    assert sum(period["requests_num"] for period in periods) == THREADS * PER_THREAD
    assert final["requests_waiting"] == 0
    assert final["checked_out"] == 0
    assert all(period["max_hold_ms"] <= period["usage_ms"] for period in periods)
    assert sum(period["usage_ms"] for period in periods) > 0


async def test_counters_lose_no_checkout_across_tasks(async_db_url: str) -> None:
    tasks, per_task = 40, 60
    async with AsyncDatabase(async_db_url, pool_size=4, max_overflow=0, pool_timeout=30) as db:

        async def work() -> None:
            for _ in range(per_task):
                async with db.connection() as connection:
                    await connection.exec_driver_sql("SELECT 1")

        running = [asyncio.create_task(work()) for _ in range(tasks)]
        popped = []
        while not all(task.done() for task in running):
            popped.append(db.pop_stats()["pool"]["requests_num"])
            await asyncio.sleep(0.005)
        await asyncio.gather(*running)
        final = db.pool_stats()
    assert sum(popped) + final["requests_num"] == tasks * per_task
    assert final["requests_waiting"] == 0


def test_more_checkins_than_a_fold_are_summed_exactly(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url, poolclass=instrumented_pool_class(is_async=False))
    metrics = PoolMetrics()
    install(engine, metrics)
    try:
        for _ in range(FOLD_AT * 2 + 7):
            engine.pool.connect().close()
        # folded on checkin, not only when read: the pending items stay bounded
        assert len(metrics._holds) <= FOLD_AT + 1
        stats = metrics.snapshot(engine.pool)
    finally:
        engine.dispose()
    assert stats["requests_num"] == FOLD_AT * 2 + 7
    assert stats["connections_num"] == 1
    assert stats["max_hold_ms"] <= stats["usage_ms"]


def test_connect_time_is_counted_without_a_per_statement_listener(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url, poolclass=instrumented_pool_class(is_async=False))
    metrics = PoolMetrics()
    install(engine, metrics)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        stats = metrics.snapshot(engine.pool)
        # a dialect listener would cost every statement an event-list iteration
        assert not engine.dialect._has_events
    finally:
        engine.dispose()
    assert stats["connections_num"] == 1
    assert stats["connections_ms"] > 0


def test_max_queries_still_replaces_connections_after_dispose(db_url: str) -> None:
    with Database(db_url, max_queries=2, pool_size=1, max_overflow=0) as db:
        db.dispose()
        for _ in range(2):
            with db.connection() as connection:
                connection.exec_driver_sql("SELECT 1")
                connection.exec_driver_sql("SELECT 2")
        stats = db.pool_stats()
    assert stats["connections_recycled"] == 1
    assert stats["connections_num"] == 2


def test_no_upkeep_leaves_the_pools_own_get() -> None:
    engine = sa.create_engine("sqlite://", poolclass=instrumented_pool_class(is_async=False))
    install(engine, PoolMetrics())
    try:
        assert "_do_get" not in vars(engine.pool)
    finally:
        engine.dispose()


def test_a_connection_held_across_dispose_is_counted_until_returned_then_closed(
    db_url: str,
) -> None:
    with Database(db_url) as db:
        closed: list[object] = []
        sa.event.listen(db.engine.pool, "close", lambda dbapi, record: closed.append(dbapi))
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
            db.dispose()  # the engine gets a fresh pool; this connection is still in use
            assert db.pool_stats()["checked_out"] == 1
        assert db.pool_stats()["checked_out"] == 0
        # given back to a pool nobody uses any more: closed, not left open until collected
        assert len(closed) == 1
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
            assert db.pool_stats()["checked_out"] == 1
        assert db.pool_stats()["checked_out"] == 0


async def test_an_async_connection_held_across_dispose_is_counted_then_closed(
    async_db_url: str,
) -> None:
    async with AsyncDatabase(async_db_url) as db:
        closed: list[object] = []
        pool = db.engine.sync_engine.pool
        sa.event.listen(pool, "close", lambda dbapi, record: closed.append(dbapi))
        async with db.connection() as connection:
            await connection.exec_driver_sql("SELECT 1")
            await db.dispose()
            assert db.pool_stats()["checked_out"] == 1
        assert db.pool_stats()["checked_out"] == 0
        assert len(closed) == 1
