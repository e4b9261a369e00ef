"""At scale: keyset pagination over 10,000 rows while rows keep arriving, and a 100,000-row bulk
load with one bad row. This async file is the source of ``test_scale.py`` (``make sync``)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from dalkit import AsyncDatabase, AsyncRepository, BulkLoadError, CursorPage, UniqueViolationError

from .models import EPOCH, Reading

ROWS = 10_000
PAGE = 250


class ReadingRepository(AsyncRepository[Reading]):
    max_page_size = 1000
    cursor_secret = "scale-test-cursor-secret"  # cursors are encrypted with a configured key


def reading(i: int, bucket: int) -> dict[str, Any]:
    return {
        "id": i,
        "sensor": f"s{i % 13}",
        "value": i % 500,
        "taken_at": EPOCH + dt.timedelta(minutes=i % 97),
        "bucket": bucket,
    }


async def insert_committed(db: AsyncDatabase, rows: list[dict[str, Any]]) -> None:
    async with db.session() as session:
        await ReadingRepository(session).bulk_insert(rows)


async def read_page(db: AsyncDatabase, **options: Any) -> CursorPage[Reading]:
    # each page in its own transaction, as each request of an API would be
    async with db.session() as session:
        return await ReadingRepository(session).paginate_cursor(limit=PAGE, **options)


async def test_keyset_walk_sees_every_row_once_while_rows_are_inserted(
    async_database: AsyncDatabase,
) -> None:
    chance = random.Random(4)
    # ten buckets: ~1,000 rows tie on each sort value, the id breaks the ties
    await insert_committed(async_database, [reading(i, chance.randrange(10)) for i in range(ROWS)])
    original = set(range(ROWS))
    next_id = ROWS

    async def someone_inserts() -> None:
        nonlocal next_id
        batch = [reading(next_id + k, chance.randrange(10)) for k in range(7)]
        next_id += len(batch)
        await insert_committed(async_database, batch)

    for sort in ("bucket", "-bucket,-taken_at"):
        forward: list[Reading] = []
        page = await read_page(async_database, sort=sort)
        pages = 1
        while True:
            forward.extend(page.items)
            await someone_inserts()
            if page.next_cursor is None:
                break
            page = await read_page(async_database, sort=sort, after=page.next_cursor)
            pages += 1
        backward: list[Reading] = list(page.items)
        while page.prev_cursor is not None:
            await someone_inserts()
            page = await read_page(async_database, sort=sort, before=page.prev_cursor)
            backward[:0] = page.items

        for walked in (forward, backward):
            ids = [r.id for r in walked]
            assert len(ids) == len(set(ids)), "a row was returned twice"
            assert original <= set(ids), f"rows missing: {sorted(original - set(ids))[:10]}"
            keys = [_sort_key(r, sort) for r in walked]
            assert keys == sorted(keys)
        assert pages >= ROWS // PAGE


def _sort_key(row: Reading, sort: str) -> tuple[Any, ...]:
    if sort == "bucket":
        return (row.bucket, row.id)
    return (-row.bucket, -row.taken_at.timestamp(), row.id)


async def test_one_bad_row_in_100000_leaves_the_table_as_it_was(
    async_database: AsyncDatabase,
) -> None:
    await insert_committed(async_database, [reading(i, 0) for i in range(-100, 0)])
    rows = [reading(i, i % 10) for i in range(100_000)]
    rows[50_000] = reading(-7, 0)  # clashes with a committed row
    with pytest.raises(BulkLoadError) as caught:
        async with async_database.session() as session:
            await ReadingRepository(session).bulk_insert(rows)
    assert caught.value.row_index == 50_000
    assert "row 50000" in str(caught.value)
    assert isinstance(caught.value.__cause__, UniqueViolationError)
    async with async_database.session() as session:
        readings = ReadingRepository(session)
        assert await readings.count() == 100
        assert await readings.count(id__gte=0) == 0


@pytest.mark.parametrize(
    ("at", "value"),
    [(12_345, 2**31), (23_456, "7"), (34_999, 2**31)],
    ids=["too-wide-early", "text-midway", "too-wide-last"],
)
async def test_a_bad_value_in_any_segment_of_a_load_is_named_or_coerced_and_nothing_is_left(
    async_database: AsyncDatabase, at: int, value: Any
) -> None:
    # a COPY's rows are checked segment by segment as it streams them (StreamedTuples.checked)
    rows = [reading(i, i % 10) for i in range(35_000)]
    rows[at] = {**rows[at], "value": value}
    async with async_database.session() as session:
        readings = ReadingRepository(session)
        if isinstance(value, str):  # coerced as add() does: the load is redone, all of it
            assert await readings.bulk_insert(rows) == 35_000
            stored = await readings.get(at)
            assert stored is not None
            assert stored.value == 7
            return
        with pytest.raises(BulkLoadError) as caught:
            await readings.bulk_insert(rows)
        assert caught.value.row_index == at
        # SQLite's processor said "a value is past 32 bits", naming no field
        assert f"row {at} cannot be written: value" in str(caught.value)
        assert await readings.count() == 0  # the session is still usable, and nothing stayed
