"""Fixtures for the query tests: sessions on the plugin's databases (SQLite and PostgreSQL,
sync and async) with the test tables, and the cursor secret in ``session.info`` where
``Database(secret_key=...)`` puts it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.query.cursor import SECRET_KEY_INFO

from .models import Base

SECRET = "a test secret that is long enough"


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    Base.metadata.create_all(db.engine)
    with db.session_factory() as opened:
        opened.info[SECRET_KEY_INFO] = SECRET
        yield opened
        opened.rollback()


@pytest.fixture
async def async_session(async_db: AsyncDatabase) -> AsyncIterator[AsyncSession]:
    async with async_db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with async_db.session_factory() as opened:
        opened.info[SECRET_KEY_INFO] = SECRET
        yield opened
        await opened.rollback()
