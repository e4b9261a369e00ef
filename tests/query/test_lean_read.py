"""The lean read on asyncpg (dalkit.query.lean_read) gives what SQLAlchemy's execution gives:
the same values for every column type, the same statement to dalkit's hooks, the same errors
and the same pool afterwards; and anything it would not serve (a user's engine listener) sends
the read SQLAlchemy's way."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import enum
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    DalkitError,
    QueryBudgetExceededError,
    StatementTimeoutError,
)
from dalkit.query import lean_read
from dalkit.tables import UTCDateTime
from dalkit.testing import PostgresServer

pytestmark = pytest.mark.postgres


class Base(DeclarativeBase):
    pass


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Upper(sa.TypeDecorator[str]):
    """Stored upper-case, read back with a marker: both processors must run."""

    impl = sa.String(40)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else value.upper()

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else f"<{value}>"


class Sample(Base):
    __tablename__ = "lean_samples"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    mood: Mapped[Mood | None] = mapped_column(sa.Enum(Mood, name="lean_mood"))
    plain_mood: Mapped[Mood | None] = mapped_column(sa.Enum(Mood, native_enum=False))
    doc: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    docb: Mapped[Any] = mapped_column(pg.JSONB, nullable=True)
    uid: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    uid_text: Mapped[str | None] = mapped_column(sa.Uuid(as_uuid=False))
    amount: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(12, 3))
    amount_float: Mapped[float | None] = mapped_column(sa.Numeric(12, 3, asdecimal=False))
    ratio: Mapped[float | None] = mapped_column(sa.Float)
    real: Mapped[float | None] = mapped_column(sa.Float(precision=24))
    at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    naive: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    utc: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    day: Mapped[dt.date | None] = mapped_column(sa.Date)
    span: Mapped[dt.timedelta | None] = mapped_column(sa.Interval)
    tags: Mapped[list[str] | None] = mapped_column(pg.ARRAY(sa.String))
    blob: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    flag: Mapped[bool | None] = mapped_column(sa.Boolean)
    shout: Mapped[str | None] = mapped_column(Upper)


class Samples(AsyncRepository[Sample]):
    filterable = ("mood", "plain_mood", "uid", "uid_text", "amount", "at", "day", "flag")


ROWS = [
    Sample(
        id=1,
        mood=Mood.HAPPY,
        plain_mood=Mood.SAD,
        doc={"a": [1, 2.5, None, "x"]},
        docb={"nested": {"k": True}},
        uid=uuid.UUID(int=7),
        uid_text=str(uuid.UUID(int=8)),
        amount=decimal.Decimal("12.345"),
        amount_float=0.125,
        ratio=0.1,
        real=0.1,
        at=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        naive=dt.datetime(2024, 5, 6, 7, 8, 9),
        utc=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        day=dt.date(2024, 2, 29),
        span=dt.timedelta(days=2, seconds=5),
        tags=["a", "b"],
        blob=b"\x00\xff",
        flag=True,
        shout="quiet",
    ),
    Sample(id=2),  # every other column NULL
]
COLUMNS = [column.key for column in Sample.__table__.columns]


@pytest.fixture
async def db(postgres_database_url: str) -> AsyncIterator[AsyncDatabase]:
    url = sa.make_url(postgres_database_url).set(drivername="postgresql+asyncpg")
    # N+1 detection off (the test plugin turns it on): while it counts, reads keep to the
    # session's connection and never take the lean read
    database = AsyncDatabase(url, pool_size=2, nplusone="off", slow_query_ms=0)
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with database.transaction() as session:
        session.add_all(
            [Sample(**{k: getattr(row, k) for k in COLUMNS}) for row in ROWS]  # fresh copies
        )
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def lean_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the lean read ran (a spy on its stand-in context)."""
    runs: list[str] = []
    made = lean_read._Context

    class Spied(made):  # type: ignore[misc,valid-type]
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            runs.append(args[3])

    monkeypatch.setattr(lean_read, "_Context", Spied)
    return runs


async def _get(db: AsyncDatabase, ident: int) -> dict[str, Any]:
    async with db.transaction() as session:
        got = await Samples(session).get(ident)
        return {key: getattr(got, key) for key in COLUMNS}


async def _orm(db: AsyncDatabase, ident: int) -> dict[str, Any]:
    async with db.transaction() as session:
        got = (await session.execute(sa.select(Sample).where(Sample.id == ident))).scalar_one()
        return {key: getattr(got, key) for key in COLUMNS}


async def test_the_lean_read_gives_each_column_type_what_sqlalchemy_gives(
    db: AsyncDatabase, lean_runs: list[str]
) -> None:
    for row in ROWS:
        lean = await _get(db, row.id)
        normal = await _orm(db, row.id)
        assert lean == normal
        assert {k: type(v) for k, v in lean.items()} == {k: type(v) for k, v in normal.items()}
    assert len(lean_runs) == 2  # each get went the lean way (the ORM's select did not)
    assert (await _get(db, ROWS[0].id))["shout"] == "<QUIET>"
    # the filters' values go through their columns' bind processors
    first = ROWS[0]
    for name in ("mood", "plain_mood", "uid", "uid_text", "amount", "at", "day", "flag"):
        async with db.transaction() as session:
            found = await Samples(session).list(**{name: getattr(first, name)})
        assert [row.id for row in found] == [first.id], name
    assert len(lean_runs) == 3 + 8


async def test_dalkit_hooks_see_the_lean_read_as_they_see_sqlalchemys(
    db: AsyncDatabase, lean_runs: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    def seen() -> tuple[list[Any], list[str]]:
        assert db.observer is not None
        assert db.observer.stats is not None
        stats = db.observer.stats.snapshot(reset=True)
        shapes = [
            (entry["statement"], entry["count"], entry["rows"], entry["errors"])
            for entry in stats
            if "lean_samples" in entry["statement"]
        ]
        slow = [r.getMessage() for r in caplog.records if r.name == "dalkit.slow_query"]
        return shapes, slow

    with caplog.at_level(logging.INFO, logger="dalkit.slow_query"):
        seen()
        caplog.clear()
        await _get(db, ROWS[0].id)
        lean = seen()
        assert len(lean_runs) == 1
        caplog.clear()
        listener = _stay_normal(db)
        await _get(db, ROWS[0].id)
        normal = seen()
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)
    assert len(lean_runs) == 1  # the second read went SQLAlchemy's way
    assert lean[0] == normal[0]
    assert lean[0]
    assert len(lean[1]) == len(normal[1]) == 1
    # the same statement and masked parameters in the slow-query log (its time aside)
    assert _no_timing(lean[1][0]) == _no_timing(normal[1][0])


def _no_timing(message: str) -> str:
    return re.sub(r"[0-9.]+ ms", "", message)


def _stay_normal(db: AsyncDatabase) -> Any:
    def listener(*args: Any) -> None:
        pass

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    return listener


async def test_a_users_engine_listener_sees_the_read(
    db: AsyncDatabase, lean_runs: list[str]
) -> None:
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        await _get(db, ROWS[0].id)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)
    assert lean_runs == []
    assert [s for s in statements if "lean_samples" in s]


@pytest.mark.parametrize("name", ["handle_error", "engine_connect", "before_execute", "rollback"])
async def test_any_other_listener_of_the_users_sends_the_read_sqlalchemys_way(
    db: AsyncDatabase, lean_runs: list[str], name: str
) -> None:
    def listener(*args: Any) -> None:
        pass

    event.listen(db.engine.sync_engine, name, listener)
    try:
        assert (await _get(db, ROWS[0].id))["id"] == ROWS[0].id
    finally:
        event.remove(db.engine.sync_engine, name, listener)
    assert lean_runs == []


async def test_an_error_is_translated_as_sqlalchemys_is(
    db: AsyncDatabase, lean_runs: list[str], postgres_database_url: str
) -> None:
    await _get(db, ROWS[0].id)  # warm: the statement is prepared on a pooled connection
    with psycopg.connect(postgres_database_url, autocommit=True) as admin:
        admin.execute("ALTER TABLE lean_samples RENAME TO lean_gone")
    errors = []
    for lean in (True, False):
        listener = None if lean else _stay_normal(db)
        with pytest.raises(DalkitError) as caught:
            await _get(db, ROWS[0].id)
        if listener is not None:
            event.remove(db.engine.sync_engine, "before_cursor_execute", listener)
        errors.append((type(caught.value), str(caught.value), caught.value.__cause__.__class__))
    assert errors[0] == errors[1]
    assert len(lean_runs) == 2  # the lean read ran (and failed) before it was turned off
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_connection_lost_mid_read_is_invalidated_as_sqlalchemys_is(
    db: AsyncDatabase, lean_runs: list[str], postgres_database_url: str
) -> None:
    await _get(db, ROWS[0].id)
    name = sa.make_url(postgres_database_url).database
    errors = []
    for lean in (True, False):
        listener = None if lean else _stay_normal(db)
        with psycopg.connect(postgres_database_url) as locker:
            locker.execute("LOCK TABLE lean_samples IN ACCESS EXCLUSIVE MODE")  # the read waits
            task = asyncio.ensure_future(_get(db, ROWS[0].id))
            await asyncio.sleep(0.3)
            with psycopg.connect(postgres_database_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND wait_event_type = 'Lock'",
                    (name,),
                )
            with pytest.raises(DalkitError) as caught:
                await task
            locker.rollback()
        if listener is not None:
            event.remove(db.engine.sync_engine, "before_cursor_execute", listener)
        errors.append((type(caught.value), caught.value.__cause__.__class__))
    assert errors[0] == errors[1]
    assert len(lean_runs) == 2
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    for _ in range(3):  # the dead connections were invalidated: the pool serves again
        assert (await _get(db, ROWS[0].id))["id"] == ROWS[0].id


async def test_a_server_restart_leaves_lean_reads_without_errors(
    db: AsyncDatabase, lean_runs: list[str], postgres_server: PostgresServer
) -> None:
    await asyncio.gather(*[_get(db, ROWS[0].id) for _ in range(2)])  # two idle connections
    postgres_server.restart()
    for _ in range(20):
        assert (await _get(db, ROWS[0].id))["id"] == ROWS[0].id
    assert len(lean_runs) >= 20


async def test_a_read_cancelled_mid_fetch_gives_its_connection_back(
    db: AsyncDatabase, lean_runs: list[str], postgres_database_url: str
) -> None:
    await _get(db, ROWS[0].id)
    with psycopg.connect(postgres_database_url) as locker:
        locker.execute("LOCK TABLE lean_samples IN ACCESS EXCLUSIVE MODE")  # the read waits
        task = asyncio.ensure_future(_get(db, ROWS[0].id))
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        locker.rollback()
    assert len(lean_runs) == 2
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert (await _get(db, ROWS[0].id))["id"] == ROWS[0].id  # and the pool still serves


@asynccontextmanager
async def _one_row(url: str, **options: Any) -> AsyncIterator[AsyncDatabase]:
    """A database of one connection with ``options``, holding the sample with id 1."""
    async_url = sa.make_url(url).set(drivername="postgresql+asyncpg")
    async with AsyncDatabase(async_url, pool_size=1, nplusone="off", **options) as db:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with db.transaction() as session:
            session.add(Sample(id=1))
        yield db


async def test_the_statement_timeout_holds_for_the_lean_read(
    postgres_database_url: str, lean_runs: list[str]
) -> None:
    async with _one_row(postgres_database_url, statement_timeout_ms=200) as db:
        await _get(db, 1)
        with psycopg.connect(postgres_database_url) as locker:
            locker.execute("LOCK TABLE lean_samples IN ACCESS EXCLUSIVE MODE")  # the read waits
            with pytest.raises(StatementTimeoutError):
                await _get(db, 1)
            locker.rollback()
        assert len(lean_runs) == 2
        assert (await _get(db, 1))["id"] == 1


async def test_lean_reads_count_toward_max_queries_and_query_budgets(
    postgres_database_url: str, lean_runs: list[str]
) -> None:
    async with _one_row(postgres_database_url, max_queries=3) as db:
        recycled = db.pool_stats()["connections_recycled"]
        for _ in range(6):
            await _get(db, 1)
        assert len(lean_runs) == 6
        assert db.pool_stats()["connections_recycled"] >= recycled + 1
        with pytest.raises(QueryBudgetExceededError), db.query_budget(max_queries=1):
            await _get(db, 1)
            await _get(db, 1)
        assert len(lean_runs) == 8
