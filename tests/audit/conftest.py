"""Fixtures for the audit-path tests: the sync and async databases of the test's backend with
the test tables and dalkit's own."""

from __future__ import annotations

import pytest

from dalkit import AsyncDatabase, Database

from .models import Base


@pytest.fixture
def database(db: Database) -> Database:
    db.create_all(Base.metadata)
    return db


@pytest.fixture
async def async_database(async_db: AsyncDatabase) -> AsyncDatabase:
    await async_db.create_all(Base.metadata)
    return async_db
