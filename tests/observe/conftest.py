"""Fixtures for the observe tests: the plugin's databases with the test tables and rows, and an
observer installed on them directly (until Database takes the options itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from dalkit import AsyncDatabase, Database
from dalkit.observe import Observer, install

from .models import Base, seed_rows


@pytest.fixture
def seeded_db(db: Database) -> Database:
    db.create_all(Base.metadata)
    with db.session() as session:
        session.add_all(seed_rows())
    return db


@pytest.fixture
def observer(seeded_db: Database) -> Iterator[Observer]:
    """Query stats on, N+1 detection raising; removed after the test."""
    observer = install(seeded_db.engine, {"nplusone": "raise"})
    try:
        yield observer
    finally:
        observer.uninstall()


@pytest.fixture
async def seeded_async_db(async_db: AsyncDatabase) -> AsyncDatabase:
    await async_db.create_all(Base.metadata)
    async with async_db.session() as session:
        session.add_all(seed_rows())
    return async_db


@pytest.fixture
async def async_observer(seeded_async_db: AsyncDatabase) -> AsyncIterator[Observer]:
    observer = install(seeded_async_db.engine, {"nplusone": "raise"})
    try:
        yield observer
    finally:
        observer.uninstall()
