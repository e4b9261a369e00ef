"""Datetime columns typed through a PostgreSQL ``DOMAIN`` or a dialect variant follow dalkit's one
datetime rule as a plain ``DateTime`` does, on every write path (add, update, upsert, Core
insert, bulk_insert, bulk_update), sync and async, psycopg and asyncpg: an aware value for a
``timestamp`` is stored at its UTC wall time, a naive one for a ``timestamptz`` taken as UTC,
whatever the session's ``TimeZone``; and the in-memory repository stores them so too."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import DOMAIN, TIMESTAMP
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dalkit import AsyncDatabase, AsyncRepository, Database, InMemoryRepository, Repository


class Base(DeclarativeBase):
    pass


class Slot(Base):
    __tablename__ = "wrapped_slots"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    wall: Mapped[dt.datetime | None] = mapped_column(DOMAIN("slot_wall", sa.DateTime()))
    instant: Mapped[dt.datetime | None] = mapped_column(
        DOMAIN("slot_instant", sa.DateTime(timezone=True))
    )
    # without a time zone on other databases, a timestamptz on PostgreSQL
    varied: Mapped[dt.datetime | None] = mapped_column(
        sa.DateTime().with_variant(TIMESTAMP(timezone=True), "postgresql")
    )


class Slots(Repository[Slot]):
    pass


class AsyncSlots(AsyncRepository[Slot]):
    pass


AWARE = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5)))  # 07:00 UTC
NAIVE = dt.datetime(2024, 1, 1, 7)  # 07:00 UTC by the rule
VALUES = {"wall": AWARE, "instant": NAIVE, "varied": NAIVE}
STORED = "SELECT id, wall::text, (instant AT TIME ZONE 'UTC')::text, \
(varied AT TIME ZONE 'UTC')::text FROM wrapped_slots ORDER BY id"
EXPECTED = [(i, *["2024-01-01 07:00:00"] * 3) for i in range(1, 7)]


def _url(base: str, driver: str) -> str:
    return make_url(base).set(drivername=driver).render_as_string(hide_password=False)


def _write(slots: Slots, session: Session) -> None:
    session.execute(sa.text("SET LOCAL TIME ZONE 'America/New_York'"))
    slots.add(Slot(id=1, **VALUES))
    slots.add(Slot(id=2))
    slots.update(2, **VALUES)
    slots.upsert({"id": 3, **VALUES}, on=["id"])
    session.execute(sa.insert(Slot).values(id=4, **VALUES))
    empty = {"id": 6, "wall": None, "instant": None, "varied": None}
    slots.bulk_insert([{"id": 5, **VALUES}, empty])
    slots.bulk_update([{"id": 6, **VALUES}])


async def _write_async(slots: AsyncSlots, session: AsyncSession) -> None:
    await session.execute(sa.text("SET LOCAL TIME ZONE 'America/New_York'"))
    await slots.add(Slot(id=1, **VALUES))
    await slots.add(Slot(id=2))
    await slots.update(2, **VALUES)
    await slots.upsert({"id": 3, **VALUES}, on=["id"])
    await session.execute(sa.insert(Slot).values(id=4, **VALUES))
    empty = {"id": 6, "wall": None, "instant": None, "varied": None}
    await slots.bulk_insert([{"id": 5, **VALUES}, empty])
    await slots.bulk_update([{"id": 6, **VALUES}])


@pytest.mark.postgres
def test_sync_psycopg_stores_domain_and_variant_datetimes_by_the_rule(
    postgres_database_url: str,
) -> None:
    db = Database(_url(postgres_database_url, "postgresql+psycopg"))
    try:
        db.create_all(Base.metadata)
        with db.session_factory() as session:
            _write(Slots(session), session)
            assert [tuple(row) for row in session.execute(sa.text(STORED))] == EXPECTED
    finally:
        db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_async_drivers_store_domain_and_variant_datetimes_by_the_rule(
    postgres_database_url: str, driver: str
) -> None:
    db = AsyncDatabase(_url(postgres_database_url, f"postgresql+{driver}"))
    try:
        await db.create_all(Base.metadata)
        async with db.session_factory() as session:
            await _write_async(AsyncSlots(session), session)
            result = await session.execute(sa.text(STORED))
            assert [tuple(row) for row in result] == EXPECTED
    finally:
        await db.dispose()


def test_the_in_memory_repository_stores_a_domain_datetime_by_the_rule() -> None:
    slots = InMemoryRepository.mirroring(Slots)([Slot(id=1, **VALUES)])
    slots.add(Slot(id=2))
    slots.update(2, **VALUES)
    slots.bulk_insert([{"id": 3, **VALUES}])
    utc = NAIVE.replace(tzinfo=dt.UTC)
    for ident in (1, 2, 3):
        assert (slots.get(ident).wall, slots.get(ident).instant) == (NAIVE, utc)
