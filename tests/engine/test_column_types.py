"""dalkit's SQLite engines refuse a float NaN, which SQLite would store as NULL, on every write
path, with a typed error; its PostgreSQL engines take a naive datetime for a timestamptz column as
UTC, and store an aware one for a timestamp column in UTC, on every write path under either
driver, whatever the server's TimeZone."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    BulkLoadError,
    Database,
    DatabaseError,
    Repository,
)


class Base(DeclarativeBase):
    """The two tables: floats (for SQLite) and zoned datetimes (for PostgreSQL)."""


class Sample(Base):
    __tablename__ = "float_samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Float)


class Stamp(Base):
    __tablename__ = "zoned_stamps"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    wall: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)


class Amount(Base):
    __tablename__ = "numeric_amounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    wide: Mapped[Decimal | None] = mapped_column(sa.Numeric(30, 10))
    free: Mapped[Decimal | None] = mapped_column(sa.Numeric())
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric(10, 2))


class Samples(Repository[Sample]):
    """Writes floats."""


class Amounts(Repository[Amount]):
    """Writes decimals."""


class AsyncAmounts(AsyncRepository[Amount]):
    """Writes decimals under aiosqlite."""


class Stamps(Repository[Stamp]):
    """Writes datetimes."""


class AsyncStamps(AsyncRepository[Stamp]):
    """Writes datetimes under asyncpg."""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'types.db'}")
    database.create_all(Base.metadata)
    yield database
    database.dispose()


WRITES: dict[str, Callable[[Samples], object]] = {
    "add": lambda samples: samples.add(Sample(id=1, value=math.nan)),
    "update": lambda samples: samples.update(samples.add(Sample(id=2, value=1.0)), value=math.nan),
    "upsert": lambda samples: samples.upsert({"id": 3, "value": math.nan}, on=["id"]),
    "bulk_insert": lambda samples: samples.bulk_insert([{"id": 4, "value": math.nan}]),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_nan_is_refused_where_sqlite_would_store_null(db: Database, write: str) -> None:
    expected = BulkLoadError if write == "bulk_insert" else DatabaseError
    with pytest.raises(expected, match="NaN"), db.transaction() as session:
        WRITES[write](Samples(session))
    assert db.sql("SELECT id, value FROM float_samples") == []


DRIVER_SQL: dict[str, tuple[str, Any]] = {
    "positional": ("INSERT INTO float_samples (id, value) VALUES (?, ?)", (1, math.nan)),
    "named": ("INSERT INTO float_samples (id, value) VALUES (:id, :v)", {"id": 1, "v": math.nan}),
    "many": ("INSERT INTO float_samples (id, value) VALUES (?, ?)", [(1, 1.0), (2, math.nan)]),
}


@pytest.mark.parametrize("case", list(DRIVER_SQL))
def test_a_nan_in_driver_sql_is_refused_where_sqlite_would_store_null(
    db: Database, case: str
) -> None:
    # exec_driver_sql() hands its values to sqlite3 with no bind processor: the NaN was NULL
    statement, parameters = DRIVER_SQL[case]
    with pytest.raises(DatabaseError, match="NaN"), db.engine.begin() as connection:
        connection.exec_driver_sql(statement, parameters)
    assert db.sql("SELECT id, value FROM float_samples") == []


async def test_a_nan_in_async_driver_sql_is_refused_as_the_sync_one(tmp_path: Path) -> None:
    database = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'types.db'}")
    try:
        await database.create_all(Base.metadata)
        statement, parameters = DRIVER_SQL["positional"]
        with pytest.raises(DatabaseError, match="NaN"):
            async with database.engine.begin() as connection:
                await connection.exec_driver_sql(statement, parameters)
        assert await database.sql("SELECT id FROM float_samples") == []
    finally:
        await database.dispose()


# SQLite keeps NUMERIC as a float: these came back as 12345678901234568, 0.123456789012346, NULL
# (0.123456789012, of 12 places in a column without a scale, read back with 10, now whole)
INEXACT = {
    "wide": Decimal("12345678901234567.89"),
    "free": Decimal("0.1234567890123456"),  # 16 significant digits
    "nan": Decimal("NaN"),
    "float_nan": math.nan,
}
DECIMAL_WRITES: dict[str, Callable[[Amounts, str, Any], object]] = {
    "add": lambda amounts, name, value: amounts.add(Amount(id=1, **{name: value})),
    "update": lambda amounts, name, value: amounts.update(
        amounts.add(Amount(id=2)), **{name: value}
    ),
    "upsert": lambda amounts, name, value: amounts.upsert({"id": 3, name: value}, on=["id"]),
    "bulk_insert": lambda amounts, name, value: amounts.bulk_insert([{"id": 4, name: value}]),
    "core": lambda amounts, name, value: amounts.session.execute(
        sa.insert(Amount).values(id=5, **{name: value})
    ),
}


@pytest.mark.parametrize("write", list(DECIMAL_WRITES))
@pytest.mark.parametrize("case", list(INEXACT))
def test_a_decimal_sqlite_would_not_read_back_is_refused(
    db: Database, write: str, case: str
) -> None:
    name = "wide" if case in ("wide", "float_nan") else "free"
    expected = BulkLoadError if write == "bulk_insert" else DatabaseError
    with pytest.raises(expected, match=r"NaN|NUMERIC as a float"), db.transaction() as session:
        DECIMAL_WRITES[write](Amounts(session), name, INEXACT[case])
    assert db.sql("SELECT id FROM numeric_amounts") == []


# what PostgreSQL stores for these floats in a NUMERIC(10, 2): the float8 cast through its 15
# significant digits, then rounded half away from zero; SQLite's read rounded the binary float
# (1.00499999...) and gave 1.00, -1.00, 2.67 and 0.28
FLOAT_PRICES = {1: 1.005, 2: -1.005, 3: 2.675, 4: 0.285, 5: 3.0}
PG_PRICES = {1: Decimal("1.01"), 2: Decimal("-1.01"), 3: Decimal("2.68"), 4: Decimal("0.29")}
# (update(), update_many() and upsert() refuse a float with more places than the scale)
PRICE_WRITES: dict[str, Callable[[Amounts], object]] = {
    "add": lambda amounts: [amounts.add(Amount(id=i, price=p)) for i, p in FLOAT_PRICES.items()],
    "add_many": lambda amounts: amounts.add_many(
        [Amount(id=i, price=p) for i, p in FLOAT_PRICES.items()]
    ),
    "bulk_insert": lambda amounts: amounts.bulk_insert(
        [{"id": i, "price": p} for i, p in FLOAT_PRICES.items()]
    ),
    "bulk_update": lambda amounts: (
        amounts.bulk_insert([{"id": i} for i in FLOAT_PRICES]),
        amounts.bulk_update([{"id": i, "price": p} for i, p in FLOAT_PRICES.items()]),
    ),
    "core": lambda amounts: amounts.session.execute(
        sa.insert(Amount), [{"id": i, "price": p} for i, p in FLOAT_PRICES.items()]
    ),
}


@pytest.mark.parametrize("write", list(PRICE_WRITES))
def test_a_float_for_a_scaled_numeric_is_stored_as_postgresql_stores_it(
    db: Database, write: str
) -> None:
    with db.transaction() as session:
        PRICE_WRITES[write](Amounts(session))
    with db.session() as session:
        stored = {amount.id: amount.price for amount in Amounts(session).list()}
    assert stored == {**PG_PRICES, 5: Decimal("3.00")}
    with db.transaction() as session:  # a Decimal keeps its value, and is still checked
        Amounts(session).update(Amounts(session).get(1), price=Decimal("1.25"))
    with db.session() as session:
        assert Amounts(session).get(1).price == Decimal("1.25")


async def test_aiosqlite_refuses_an_inexact_decimal_too_and_stores_an_exact_one(
    tmp_path: Path,
) -> None:
    db = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'types.db'}")
    try:
        await db.create_all(Base.metadata)
        with pytest.raises(DatabaseError, match="NUMERIC as a float"):
            async with db.transaction() as session:
                await AsyncAmounts(session).add(Amount(id=1, wide=INEXACT["wide"]))
        async with db.transaction() as session:
            amounts = AsyncAmounts(session)
            await amounts.add(Amount(id=2, wide=Decimal("1234567.1234567"), free=2.675))
            session.expire_all()
            stored = await amounts.get(2)
            assert (stored.wide, stored.free) == (Decimal("1234567.1234567"), Decimal("2.675"))
    finally:
        await db.dispose()


def test_infinities_are_still_stored(db: Database) -> None:
    with db.transaction() as session:
        Samples(session).add_many([Sample(id=1, value=math.inf), Sample(id=2, value=-math.inf)])
    assert db.sql("SELECT value FROM float_samples ORDER BY id") == [
        {"value": math.inf},
        {"value": -math.inf},
    ]


def _in_kolkata(postgres_url: str, postgres_database_url: str) -> sa.URL:
    """The test database's URL, its server TimeZone set to Asia/Kolkata (+05:30)."""
    url = make_url(postgres_database_url)
    admin = make_url(postgres_url).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"ALTER DATABASE \"{url.database}\" SET timezone TO 'Asia/Kolkata'")
    return url


def test_a_naive_datetime_in_a_zoned_column_is_utc_under_both_drivers(
    postgres_url: str, postgres_database_url: str
) -> None:
    url = _in_kolkata(postgres_url, postgres_database_url)
    noon = dt.datetime(2024, 1, 1, 12)
    db = Database(url.set(drivername="postgresql+psycopg"))
    try:
        db.create_all(Base.metadata)
        with db.transaction() as session:
            stamps = Stamps(session)
            stamps.add(Stamp(id=1, at=noon))  # psycopg: read in the session's +05:30
            stamps.update(stamps.add(Stamp(id=2)), at=noon)
        asyncio.run(_add_async(url.set(drivername="postgresql+asyncpg"), noon))
        stored = db.sql("SELECT id, at AT TIME ZONE 'UTC' AS utc FROM zoned_stamps ORDER BY id")
    finally:
        db.dispose()
    assert stored == [{"id": i, "utc": noon} for i in (1, 2, 3)]


async def _add_async(url: sa.URL, at: dt.datetime) -> None:
    db = AsyncDatabase(url)
    try:
        async with db.transaction() as session:
            await AsyncStamps(session).add(Stamp(id=3, at=at))
    finally:
        await db.dispose()


NOON = dt.datetime(2024, 1, 1, 12)  # in the timestamptz column: 12:00 UTC
AWARE = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5)))  # 07:00 UTC
VALUES = {"at": NOON, "wall": AWARE}


def _writes(stamps: Stamps, session: sa.orm.Session) -> None:
    """One row per write path, ids 1-8 (each driver's rows are offset by its own base)."""
    stamps.add(Stamp(id=1, **VALUES))
    stamps.add_many([Stamp(id=2, **VALUES)])
    stamps.update(stamps.add(Stamp(id=3)), **VALUES)
    stamps.upsert({"id": 4, **VALUES}, on=["id"])
    stamps.bulk_insert([{"id": 5, **VALUES}, {"id": 6, "at": None, "wall": None}])
    stamps.bulk_update([{"id": 6, **VALUES}])
    session.execute(sa.insert(Stamp).values(id=7, **VALUES))
    session.execute(sa.insert(Stamp).values(id=8))
    session.execute(sa.update(Stamp).where(Stamp.id == 8).values(**VALUES))


async def _writes_async(stamps: AsyncStamps, session: Any) -> None:
    await stamps.add(Stamp(id=11, **VALUES))
    await stamps.add_many([Stamp(id=12, **VALUES)])
    await stamps.update(await stamps.add(Stamp(id=13)), **VALUES)
    await stamps.upsert({"id": 14, **VALUES}, on=["id"])
    await stamps.bulk_insert([{"id": 15, **VALUES}, {"id": 16, "at": None, "wall": None}])
    await stamps.bulk_update([{"id": 16, **VALUES}])
    await session.execute(sa.insert(Stamp).values(id=17, **VALUES))
    await session.execute(sa.insert(Stamp).values(id=18))
    await session.execute(sa.update(Stamp).where(Stamp.id == 18).values(**VALUES))


async def _write_async(url: sa.URL) -> None:
    db = AsyncDatabase(url)
    try:
        async with db.transaction() as session:
            await _writes_async(AsyncStamps(session), session)
    finally:
        await db.dispose()


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "psycopg_async"])
def test_every_write_path_stores_one_value_across_zones(
    postgres_url: str, postgres_database_url: str, driver: str
) -> None:
    # psycopg's add() had the server convert in its TimeZone (the aware 12:00+05 stored as
    # 12:30 in the timestamp column), asyncpg refused it, and every COPY refused both values
    url = _in_kolkata(postgres_url, postgres_database_url)
    db = Database(url.set(drivername="postgresql+psycopg"))
    try:
        db.create_all(Base.metadata)
        if driver == "psycopg":
            with db.transaction() as session:
                _writes(Stamps(session), session)
        else:
            asyncio.run(_write_async(url.set(drivername=f"postgresql+{driver.split('_')[0]}")))
        stored = db.sql("SELECT at AT TIME ZONE 'UTC' AS at, wall FROM zoned_stamps ORDER BY id")
    finally:
        db.dispose()
    assert stored == [{"at": NOON, "wall": dt.datetime(2024, 1, 1, 7)}] * 8


DOCS = sa.Table("json_docs", sa.MetaData(), sa.Column("doc", sa.JSON))


async def test_a_json_value_psycopg_cannot_encode_is_a_database_error(
    postgres_database_url: str,
) -> None:
    # psycopg's dumper raised a bare TypeError, where asyncpg and SQLite raise DatabaseError
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    text = url.render_as_string(hide_password=False)
    db, adb = Database(text), AsyncDatabase(text)
    try:
        DOCS.create(db.engine)
        with pytest.raises(DatabaseError, match="JSON serializable"), db.transaction() as session:
            session.execute(sa.insert(DOCS).values(doc={1, 2}))
        with pytest.raises(DatabaseError, match="JSON serializable"):
            async with adb.transaction() as async_session:
                await async_session.execute(sa.insert(DOCS).values(doc={1, 2}))
    finally:
        db.dispose()
        await adb.dispose()


def test_a_number_without_a_scale_reads_back_whole_as_on_postgresql(db: Database) -> None:
    # SQLAlchemy read SQLite's NUMERIC without a scale at 10 places: 0.123456789012 came back
    # 0.1234567890 and 1/3 as 0.3333333333, where PostgreSQL keeps 0.123456789012 and the
    # float's 15 significant digits
    with db.transaction() as session:
        amounts = Amounts(session)
        amounts.add(Amount(id=1, free=Decimal("0.123456789012")))
        amounts.add(Amount(id=2, free=1 / 3))
        amounts.add(Amount(id=3, free=3))
    with db.transaction() as session:
        read = session.execute(sa.select(Amount.free).order_by(Amount.id)).scalars().all()
    assert [str(number) for number in read] == ["0.123456789012", "0.333333333333333", "3"]
