"""Statements that must not run before a deferred BEGIN, although they only read: a server-side
cursor (PostgreSQL runs its DECLARE only in a transaction block), the transaction's clock
(``now()``, and the ``'now'`` of a timestamp's text, answer the same time for every statement
of one transaction) and a text holding a second statement. Each begins the transaction, so the
transaction sees what it would see had it begun at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.transaction.deferred import is_plain_read, runs_before_begin

from .conftest import StatementLog, with_driver
from .models import Item, create_all_async

pytestmark = pytest.mark.postgres


def _seed(session: sa.orm.Session, count: int) -> None:
    session.add_all(Item(id=n, name=f"item {n}") for n in range(2, count + 2))


def test_a_server_side_cursor_begins_the_transaction(
    pg: Database, statement_log: StatementLog
) -> None:
    with pg.transaction() as session:
        _seed(session, 30)
    statement_log.mark()
    with pg.transaction() as session:
        streamed = session.scalars(sa.select(Item).order_by(Item.id).execution_options(yield_per=7))
        assert [item.id for item in streamed] == list(range(1, 32))
    with pg.session() as session:
        rows = session.execute(sa.select(Item.id), execution_options={"stream_results": True})
        assert len(rows.all()) == 31
    assert statement_log.statements()[:2] == ["BEGIN", "DECLARE"]


async def test_an_async_server_side_cursor_on_psycopg_begins_the_transaction(
    postgres_database_url: str,
) -> None:
    db = AsyncDatabase(with_driver(postgres_database_url, "postgresql+psycopg"))
    try:
        await create_all_async(db)
        async with db.transaction() as session:
            session.add_all(Item(id=n, name=f"item {n}") for n in range(1, 12))
        async with db.transaction() as session:
            streamed = await session.stream_scalars(sa.select(Item.id).order_by(Item.id))
            assert [n async for n in streamed] == list(range(1, 12))
    finally:
        await db.dispose()


def test_a_read_only_transaction_streams_in_its_read_only_transaction(pg: Database) -> None:
    # its BEGIN READ ONLY must not go through the server-side cursor (DECLARE ... FOR BEGIN)
    with pg.transaction() as session:
        _seed(session, 30)
    for options in ({"yield_per": 7}, {"stream_results": True}):
        with pg.transaction(read_only=True) as session:
            streamed = session.scalars(
                sa.select(Item.id).order_by(Item.id), execution_options=options
            )
            assert list(streamed) == list(range(1, 32))
            assert session.execute(sa.text("SHOW transaction_read_only")).scalar() == "on"


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_an_async_read_only_transaction_streams(
    postgres_database_url: str, driver: str
) -> None:
    db = AsyncDatabase(with_driver(postgres_database_url, f"postgresql+{driver}"))
    try:
        await create_all_async(db)
        async with db.transaction() as session:
            session.add_all(Item(id=n, name=f"item {n}") for n in range(1, 12))
        async with db.transaction(read_only=True) as session:
            streamed = await session.stream_scalars(sa.select(Item.id).order_by(Item.id))
            assert [n async for n in streamed] == list(range(1, 12))
            read_only = await session.execute(sa.text("SHOW transaction_read_only"))
            assert read_only.scalar() == "on"
    finally:
        await db.dispose()


def test_now_answers_one_time_for_the_whole_transaction(
    pg: Database, statement_log: StatementLog
) -> None:
    pg.sql("CREATE TABLE stamped (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
    statement_log.mark()
    with pg.transaction() as session:
        first = session.scalar(sa.select(sa.func.now()))
        second = session.scalar(sa.text("SELECT CURRENT_TIMESTAMP"))
        session.execute(sa.text("INSERT INTO stamped (id) VALUES (1)"))
        stored = session.scalar(sa.text("SELECT at FROM stamped"))
    assert isinstance(first, dt.datetime)
    assert first == second == stored
    assert statement_log.statements()[:2] == ["BEGIN", "SELECT"]
    # a read that does not read the clock still runs alone
    statement_log.mark()
    with pg.transaction() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Item)) == 1
    assert statement_log.statements() == ["SELECT"]


# PostgreSQL reads the text 'now' as a timestamp as the transaction's start time, like now()
NOW_READS = (
    sa.text("SELECT 'now'::timestamptz"),
    sa.select(sa.cast(sa.literal("now"), sa.DateTime(timezone=True))),  # bound: CAST(%(p)s ...)
)


@pytest.mark.parametrize("read_only", [False, True])
def test_the_now_of_a_timestamps_text_answers_one_time_for_the_whole_transaction(
    pg: Database, read_only: bool
) -> None:
    # before, each of these reads ran before the deferred BEGIN and answered its own time
    for statement in NOW_READS:
        with pg.transaction(read_only=read_only) as session:
            first = session.scalar(statement)
            time.sleep(0.02)
            assert session.scalar(statement) == first


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_the_now_of_a_timestamps_text_answers_one_time_in_an_async_transaction(
    postgres_database_url: str, driver: str
) -> None:
    db = AsyncDatabase(with_driver(postgres_database_url, f"postgresql+{driver}"))
    try:
        for statement in NOW_READS:
            async with db.transaction(read_only=True) as session:
                first = await session.scalar(statement)
                await asyncio.sleep(0.02)
                assert await session.scalar(statement) == first
    finally:
        await db.dispose()


@pytest.mark.parametrize("fail", [False, True])
def test_a_second_statement_after_a_select_in_one_text_is_in_the_transaction(
    pg: Database, fail: bool
) -> None:
    class Boom(Exception):
        pass

    try:
        with pg.transaction() as session:
            connection = session.connection()
            connection.exec_driver_sql("SELECT 1; DELETE FROM items WHERE id = 1")
            if fail:
                raise Boom
    except Boom:
        pass
    with pg.transaction() as session:
        assert (session.get(Item, 1) is None) is not fail


@pytest.mark.parametrize(
    ("statement", "plain", "before_begin"),
    [
        ("SELECT name FROM items WHERE id = %(id)s", True, True),
        ("SELECT 1; DELETE FROM items", False, False),
        ("SELECT 1;", True, True),
        ("SELECT ';' AS semicolon", True, True),
        ("SELECT now()", True, False),
        ("SELECT localtimestamp, current_date", True, False),
        ("SELECT 'now()' AS word", True, True),
        ("SELECT 'now'::timestamptz", True, False),  # PostgreSQL's 'now': the transaction's
        ("SELECT timestamptz ' NOW '", True, False),
        ("SELECT 'nowhere' AS word", True, True),
        ("SELECT clock_timestamp()", False, False),  # not known to only read: begins too
    ],
)
def test_which_selects_may_run_before_the_begin(
    statement: str, plain: bool, before_begin: bool
) -> None:
    assert is_plain_read(statement) is plain
    assert runs_before_begin(statement) is before_begin
