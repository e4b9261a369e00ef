"""Pool upkeep: connect time apart from waiting, min_size, max_queries, max_idle_s and the
periodic status log, on both drivers of both backends."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from dalkit import AsyncDatabase, Database


def _slow_init(connection: Any) -> None:
    time.sleep(0.2)


async def _slow_async_init(connection: Any) -> None:
    await asyncio.sleep(0.2)


def test_opening_a_connection_counts_as_connect_time_not_waiting(db_url: str) -> None:
    with Database(db_url, init=_slow_init) as db:
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        stats = db.pool_stats()
    assert stats["connections_ms"] >= 200
    assert stats["requests_wait_ms"] < 100


async def test_async_connect_time_is_not_waiting(async_db_url: str) -> None:
    async with AsyncDatabase(async_db_url, init=_slow_async_init) as db:
        async with db.connection() as connection:
            await connection.exec_driver_sql("SELECT 1")
        stats = db.pool_stats()
    assert stats["connections_ms"] >= 200
    assert stats["requests_wait_ms"] < 100


def _identity(db: Database) -> object:
    # the object itself, not its id(): a closed connection's id may be reused by the next one
    with db.driver_connection() as raw:
        return raw


def test_min_size_opens_that_many_connections_at_the_first_checkout(db_url: str) -> None:
    with Database(db_url, min_size=3, pool_size=5) as db:
        assert db.pool_stats()["connections_num"] == 0
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        stats = db.pool_stats()
    assert stats["pool_min"] == 3
    assert stats["connections_num"] == 3
    assert stats["pool_available"] == 3
    assert stats["requests_num"] == 1


async def test_min_size_prewarms_the_async_pool(async_db_url: str) -> None:
    async with AsyncDatabase(async_db_url, min_size=2, pool_size=4) as db:
        async with db.connection() as connection:
            await connection.exec_driver_sql("SELECT 1")
        stats = db.pool_stats()
    assert (stats["connections_num"], stats["pool_available"]) == (2, 2)


def test_max_queries_replaces_a_connection_after_that_many_statements(db_url: str) -> None:
    with Database(db_url, max_queries=3, pool_size=1, max_overflow=0) as db:
        first = _identity(db)
        with db.connection() as connection:
            for _ in range(3):
                connection.exec_driver_sql("SELECT 1")
        # three statements ran on it: the next checkout gets a new connection
        second = _identity(db)
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        third = _identity(db)
        stats = db.pool_stats()
        # counted by a dialect hook: PostgreSQL connections dispatch no engine event (SQLite's
        # BEGIN handling has listeners of its own)
        assert db.engine.dialect.name == "sqlite" or not db.engine._has_events
    assert first is not second
    assert second is third
    assert stats["connections_recycled"] == 1
    assert stats["connections_num"] == 2
    assert stats["connections_lost"] == 0


async def test_max_queries_replaces_async_connections(async_db_url: str) -> None:
    async with AsyncDatabase(async_db_url, max_queries=2, pool_size=1, max_overflow=0) as db:
        for _ in range(3):
            async with db.connection() as connection:
                await connection.exec_driver_sql("SELECT 1")
                await connection.exec_driver_sql("SELECT 2")
        stats = db.pool_stats()
    assert stats["connections_recycled"] == 2
    assert stats["connections_num"] == 3


def test_max_idle_s_replaces_a_connection_left_idle_too_long(db_url: str) -> None:
    with Database(db_url, max_idle_s=0.2, pool_size=1, max_overflow=0) as db:
        first = _identity(db)
        assert _identity(db) is first  # used again at once: kept
        time.sleep(0.3)
        replaced = _identity(db)
        stats = db.pool_stats()
    assert replaced is not first
    assert stats["connections_idle_closed"] == 1
    assert stats["connections_num"] == 2


async def test_max_idle_s_replaces_idle_async_connections(async_db_url: str) -> None:
    async with AsyncDatabase(async_db_url, max_idle_s=0.2, pool_size=1) as db:
        for pause in (0.0, 0.3):
            await asyncio.sleep(pause)
            async with db.connection() as connection:
                await connection.exec_driver_sql("SELECT 1")
        stats = db.pool_stats()
    assert stats["connections_idle_closed"] == 1
    assert stats["connections_num"] == 2


def _wait_for_status(caplog: pytest.LogCaptureFixture) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in caplog.records:
            if record.name == "dalkit.pool" and record.levelno == logging.INFO:
                return record.getMessage()
        time.sleep(0.02)
    raise AssertionError("no pool status was logged")


def test_the_pool_status_is_logged_at_info_when_asked(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dalkit.pool")
    with Database(db_url, pool_log_interval_s=0.05) as db:
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        message = _wait_for_status(caplog)
    assert message.startswith("pool status: ")
    assert "requests_num=1" in message
    assert "pool_size=5" in message


def test_no_pool_status_is_logged_by_default(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dalkit.pool")
    with Database(db_url) as db:
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        time.sleep(0.2)
    assert not [r for r in caplog.records if r.name == "dalkit.pool"]
