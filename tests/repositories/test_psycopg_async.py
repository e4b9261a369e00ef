"""Bulk loads through async psycopg, which the suite's async fixtures (asyncpg) do not reach:
its COPY is streamed like sync psycopg's (`dalkit.repository.streamed`), and falls back to
text COPY for a native ENUM column, so both are checked here as the sync suite checks them."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from dalkit import AsyncDatabase, AsyncRepository, BulkLoadError

from .conftest import backend_url
from .models import EPOCH, Price, Status, User
from .test_sql_async import check_domain_columns

pytestmark = pytest.mark.postgres


class UserRepository(AsyncRepository[User]):
    pass


class PriceRepository(AsyncRepository[Price]):
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


async def test_an_aware_datetime_for_a_column_without_time_zone_is_stored_in_utc_by_text_copy(
    session: AsyncSession,
) -> None:
    # the enum column sends the load through text COPY, which refused the value (the server
    # would parse 12:00+05 as 12:00); add() stores it in UTC, 07:00, and so does the load now
    users = UserRepository(session)
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    rows = [
        {"email": f"t{i}@example.com", "name": "t", "status": Status.banned, "created_at": EPOCH}
        for i in range(20)
    ]
    rows[13]["created_at"] = aware
    assert await users.bulk_insert(rows, chunk_size=5) == 20
    assert await users.count(created_at=dt.datetime(2024, 1, 1, 7)) == 1


async def test_a_float_for_a_numeric_column_is_stored_as_add_stores_it(
    session: AsyncSession,
) -> None:
    # binary COPY refused it; add() has the server cast it through its 15 significant digits
    prices = PriceRepository(session)
    assert await prices.bulk_insert([{"id": 1, "exact": 0.1 + 0.2, "cents": 2.675}]) == 1
    assert await prices.bulk_update([{"id": 1, "exact": 1 / 3}]) == 1
    result = await session.execute(sa.select(Price.exact, Price.cents))
    assert result.one() == (Decimal("0.333333333333333"), Decimal("2.68"))


async def test_a_domain_column_takes_the_datetimes_of_its_base_type_only(
    session: AsyncSession,
) -> None:
    await check_domain_columns(session)
