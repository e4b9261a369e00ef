"""A ``REAL`` column (or a ``Float`` of precision 24 or less: PostgreSQL's 4-byte ``real``) is
compared with the values given as the column holds them: on PostgreSQL a filter of 0.1 finds
the 0.1 stored, and a keyset walk sorted on it visits each row once (psycopg read 0.1 back and
its next cursor found the same row again, page after page). psycopg and asyncpg read the same
value back. An 8-byte float column is left as it was. SQLite and the in-memory repository hold a
``real``'s numbers as PostgreSQL does, rounded to 4 bytes, and refuse one past its range: they
kept the 8-byte float (0.123456789 read back as it was, where PostgreSQL gives 0.12345679) and
stored 1e39."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    Database,
    DatabaseError,
    InMemoryRepository,
    Repository,
)

from .conftest import Filled

SECRET = "the real columns' cursor secret"
VALUES = [0.1, 0.1, 0.2, 0.5, 2.5, 0.3]


class _Base(DeclarativeBase):
    pass


class Reading(_Base):
    __tablename__ = "real_readings"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    real: Mapped[float] = mapped_column(sa.REAL)
    narrow: Mapped[float] = mapped_column(sa.Float(precision=24))
    double: Mapped[float] = mapped_column(sa.Float)


class Readings(Repository[Reading]):
    cursor_secret = SECRET


class AsyncReadings(AsyncRepository[Reading]):
    cursor_secret = SECRET


def _rows() -> list[Reading]:
    return [Reading(id=i, real=v, narrow=v, double=v) for i, v in enumerate(VALUES, 1)]


EXPECTED: dict[str, Any] = {
    "walk": [[1, 2], [3, 6], [4, 5]],
    "eq": [1, 2],
    "gt": [3, 4, 5, 6],
    "in": [1, 2, 5],
    "values": VALUES,
}


def test_a_real_column_is_filtered_and_walked_as_it_holds_its_values(filled: Filled) -> None:
    readings = filled(Readings, _Base.metadata, _rows())
    for field in ("real", "narrow", "double"):
        pages: list[list[int]] = []
        page = readings.paginate_cursor(limit=2, sort=field)
        while len(pages) < 5:
            pages.append([r.id for r in page.items])
            if page.next_cursor is None:
                break
            page = readings.paginate_cursor(limit=2, sort=field, after=page.next_cursor)
        answers = {
            "walk": pages,
            "eq": [r.id for r in readings.find(**{field: 0.1})],
            "gt": [r.id for r in readings.find(**{f"{field}__gt": 0.1})],
            "in": [r.id for r in readings.find(**{f"{field}__in": [0.1, 2.5]})],
            "values": [getattr(r, field) for r in readings.list(sort="id")],
        }
        assert answers == EXPECTED, field


async def test_an_async_real_column_reads_and_compares_as_the_sync_one(
    async_database: AsyncDatabase,
) -> None:
    async with async_database.engine.begin() as connection:
        await connection.run_sync(_Base.metadata.create_all)
    async with async_database.session_factory() as session:
        readings = AsyncReadings(session)
        await readings.add_many(_rows())
        session.expire_all()
        for field in ("real", "narrow", "double"):
            pages: list[list[int]] = []
            page = await readings.paginate_cursor(limit=2, sort=field)
            while len(pages) < 5:
                pages.append([r.id for r in page.items])
                if page.next_cursor is None:
                    break
                page = await readings.paginate_cursor(limit=2, sort=field, after=page.next_cursor)
            answers = {
                "walk": pages,
                "eq": [r.id for r in await readings.find(**{field: 0.1})],
                "gt": [r.id for r in await readings.find(**{f"{field}__gt": 0.1})],
                "in": [r.id for r in await readings.find(**{f"{field}__in": [0.1, 2.5]})],
                "values": [getattr(r, field) for r in await readings.list(sort="id")],
            }
            assert answers == EXPECTED, field
        await session.rollback()


ROUNDED = [0.123456789, 16777217.0, 1e-40]
HELD: dict[str, Any] = {
    "values": [0.12345679, 16777216.0, 1e-40],
    "eq rounded": [1],
    "eq given": [1],
    "eq 2**24": [2],
    "walk": [[3, 1], [2]],
}


def _held(readings: Any) -> dict[str, Any]:
    first = readings.paginate_cursor(limit=2, sort="real")
    second = readings.paginate_cursor(limit=2, sort="real", after=first.next_cursor)
    return {
        "values": [r.real for r in readings.list(sort="id")],
        "eq rounded": [r.id for r in readings.find(real=0.12345679)],
        "eq given": [r.id for r in readings.find(real=0.123456789)],
        "eq 2**24": [r.id for r in readings.find(real=16777216)],
        "walk": [[r.id for r in first.items], [r.id for r in second.items]],
    }


def _rounded() -> list[Reading]:
    return [Reading(id=i, real=v, narrow=v, double=v) for i, v in enumerate(ROUNDED, 1)]


def test_a_real_column_holds_its_numbers_at_4_bytes_on_every_backend(filled: Filled) -> None:
    assert _held(filled(Readings, _Base.metadata, _rounded())) == HELD


def test_a_number_past_a_real_columns_range_is_refused(database: Database) -> None:
    _Base.metadata.create_all(database.engine)
    for number in (1e39, 1e-50):  # overflow, underflow
        with database.session_factory() as session, pytest.raises(DatabaseError, match="range"):
            Readings(session).add(Reading(id=9, real=number, narrow=1.0, double=1.0))


def test_the_in_memory_repository_refuses_a_number_past_a_real_columns_range() -> None:
    readings = InMemoryRepository.mirroring(Readings)(_rounded())
    for number in (1e39, 1e-50):
        with pytest.raises(DatabaseError, match="range"):
            readings.add(Reading(id=9, real=number, narrow=1.0, double=1.0))
        with pytest.raises(DatabaseError, match="range"):
            readings.update(readings.get(1), narrow=number)
