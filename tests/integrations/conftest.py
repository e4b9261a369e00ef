"""Fixtures for the middleware tests: the database with its tables, an observer on the same
data, and an httpx client talking to the application in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from dalkit import AsyncDatabase, Database

from .apps import Probe, async_app, sync_app
from .models import Base


def pytest_configure(config: pytest.Config) -> None:
    # until the project registers it: --strict-markers refuses unknown marks
    config.addinivalue_line("markers", "slow: a test that takes seconds rather than milliseconds")


@pytest.fixture
async def async_db(async_db_url: str) -> AsyncIterator[AsyncDatabase]:
    """The plugin's ``async_db``, with SQLite's busy timeout raised: hundreds of concurrent
    requests queue for its single writer lock on a loaded two-core machine."""
    database = AsyncDatabase(async_db_url, sqlite_busy_timeout_ms=60_000)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def observer(async_db_url: str) -> AsyncIterator[AsyncDatabase]:
    """A second AsyncDatabase on the test's data: what it sees is committed."""
    database = AsyncDatabase(async_db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def client(
    async_db: AsyncDatabase, observer: AsyncDatabase, probe: Probe
) -> AsyncIterator[httpx.AsyncClient]:
    await async_db.create_all(Base.metadata)
    transport = httpx.ASGITransport(app=async_app(async_db, observer, probe))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def sync_db(db: Database) -> Database:
    db.create_all(Base.metadata)
    return db


@pytest.fixture
async def sync_client(sync_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sync_app(sync_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
