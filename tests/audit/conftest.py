"""Fixtures for the audit-path tests: the sync and async databases of the test's backend with
the test tables and dalkit's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from dalkit import AsyncDatabase, Database
from dalkit.tables import metadata as dalkit_metadata

from .models import Base


@pytest.fixture
def database(table_copy: Callable[..., AbstractContextManager[str]]) -> Iterator[Database]:
    """A database of the test's backend with the tables (a copy: see ``table_copy``)."""
    with table_copy(Base.metadata, is_async=False) as url:
        db = Database(url)
        db.serves(Base.metadata, dalkit_metadata)  # what create_all would have recorded
        try:
            yield db
        finally:
            db.dispose()


@pytest.fixture
async def async_database(
    table_copy: Callable[..., AbstractContextManager[str]],
) -> AsyncIterator[AsyncDatabase]:
    with table_copy(Base.metadata, is_async=True) as url:
        db = AsyncDatabase(url)
        db.serves(Base.metadata, dalkit_metadata)  # as in ``database``
        try:
            yield db
        finally:
            await db.dispose()
