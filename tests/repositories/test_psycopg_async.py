"""Bulk loads through async psycopg, which the suite's async fixtures (asyncpg) do not reach:
its COPY is streamed like sync psycopg's (`dalkit.repository.streamed`), and falls back to
text COPY for a native ENUM column, so both are checked here as the sync suite checks them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from dalkit import AsyncDatabase, AsyncRepository, BulkLoadError

from .conftest import backend_url
from .models import User

pytestmark = pytest.mark.postgres


class UserRepository(AsyncRepository[User]):
    pass


@pytest.fixture
async def session(request: pytest.FixtureRequest) -> AsyncIterator[AsyncSession]:
    """A session through async psycopg on the shared test database, rolled back at the end."""
    url = make_url(backend_url(request, "postgres", is_async=True))
    db = AsyncDatabase(url.set(drivername="postgresql+psycopg").render_as_string(False))
    try:
        async with db.session_factory() as opened:
            yield opened
            await opened.rollback()
    finally:
        await db.dispose()


async def test_a_row_naming_more_fields_than_row_0_is_named_and_nothing_stays(
    session: AsyncSession,
) -> None:
    users = UserRepository(session)
    rows: list[dict[str, Any]] = [
        {"email": f"x{i}@example.com", "name": f"x{i}"} for i in range(30)
    ]
    rows[17] = {**rows[17], "score": 5}  # row 0 leaves score to its default
    with pytest.raises(BulkLoadError, match="row 17") as caught:
        await users.bulk_insert(rows, chunk_size=10)
    assert caught.value.row_index == 17
    rows[17] = {"email": "x17@example.com", "nmae": "x17"}  # as many fields, but another
    with pytest.raises(BulkLoadError, match="row 17"):
        await users.bulk_insert(rows)
    assert await users.count() == 0
