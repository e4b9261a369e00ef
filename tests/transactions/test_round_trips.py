"""What reaches the PostgreSQL server for each kind of transaction, counted from the server's own
statement log, and the isolation guarantees the deferred BEGIN must keep.

A read-only transaction at READ COMMITTED sends one statement per query (no ping, no BEGIN, no
COMMIT); a write transaction sends BEGIN, its statements and COMMIT; REPEATABLE READ and
SERIALIZABLE begin at once, because their snapshot must cover every statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from dalkit import AsyncDatabase, AsyncRepository, Database, DatabaseError, Repository
from dalkit.cache import MemoryBackend, QueryCache
from dalkit.observe import NPlusOneError
from dalkit.transaction import deferred
from dalkit.transaction.options import TransactionOptions

from .conftest import StatementLog, with_driver
from .models import Item, create_all, create_all_async

pytestmark = pytest.mark.postgres


def test_a_read_only_request_sends_one_statement_per_query(
    pg: Database, statement_log: StatementLog
) -> None:
    statement_log.mark()
    with pg.transaction() as session:
        assert session.get(Item, 1) is not None
    with pg.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Item)) == 1
    assert statement_log.statements() == ["SELECT", "SELECT"]


async def test_an_async_read_only_request_sends_one_statement_per_query(
    apg: AsyncDatabase, statement_log: StatementLog
) -> None:
    statement_log.mark()
    async with apg.transaction() as session:
        assert await session.get(Item, 1) is not None
    assert await apg.transactional(read_only=True).run(_count) == 1
    assert statement_log.statements() == ["SELECT", "SELECT"]


async def _count(session: object) -> int:
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    return int(await session.scalar(sa.select(sa.func.count()).select_from(Item)) or 0)


def test_a_write_transaction_sends_begin_its_statements_and_commit(
    pg: Database, statement_log: StatementLog
) -> None:
    statement_log.mark()
    with pg.transaction() as session:
        assert session.get(Item, 1) is not None
        session.add(Item(id=2, name="two"))
    assert statement_log.statements() == ["SELECT", "BEGIN", "INSERT", "COMMIT"]


async def test_an_async_write_transaction_sends_begin_its_statements_and_commit(
    apg: AsyncDatabase, statement_log: StatementLog
) -> None:
    statement_log.mark()
    async with apg.transaction() as session:
        session.add(Item(id=2, name="two"))
    assert statement_log.statements() == ["BEGIN", "INSERT", "COMMIT"]


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_snapshot_isolation_levels_begin_before_their_first_read(
    pg: Database, statement_log: StatementLog, isolation: str
) -> None:
    statement_log.mark()
    with pg.transaction(isolation=isolation) as session:  # type: ignore[arg-type]
        session.get(Item, 1)
    assert statement_log.statements()[0] == "BEGIN"


def _rename_elsewhere(db: Database, name: str) -> None:
    raw = psycopg.connect(with_driver(str(db.engine.url.render_as_string(False)), "postgresql"))
    with raw:
        raw.execute("UPDATE items SET name = %s WHERE id = 1", (name,))


def test_repeatable_read_keeps_one_snapshot_across_reads(pg: Database) -> None:
    with pg.transaction(isolation="REPEATABLE READ") as session:
        first = session.scalar(sa.select(Item.name).where(Item.id == 1))
        _rename_elsewhere(pg, "renamed")
        again = session.scalar(sa.select(Item.name).where(Item.id == 1))
    assert (first, again) == ("one", "one")


def test_read_committed_reads_see_each_committed_change_as_before(pg: Database) -> None:
    with pg.transaction() as session:
        first = session.scalar(sa.select(Item.name).where(Item.id == 1))
        _rename_elsewhere(pg, "renamed")
        again = session.scalar(sa.select(Item.name).where(Item.id == 1))
    assert (first, again) == ("one", "renamed")


def test_a_deferred_transaction_is_atomic_once_it_writes(pg: Database) -> None:
    with pytest.raises(RuntimeError), pg.transaction() as session:
        assert session.get(Item, 1) is not None
        session.add(Item(id=3, name="three"))
        session.flush()
        seen_inside = session.scalar(sa.select(sa.func.count()).select_from(Item))
        assert seen_inside == 2  # its own write, inside the transaction
        assert _count_elsewhere(pg) == 1  # nobody else sees it before COMMIT
        raise RuntimeError("undo")
    assert _count_elsewhere(pg) == 1


def _count_elsewhere(db: Database) -> int:
    with psycopg.connect(with_driver(db.engine.url.render_as_string(False), "postgresql")) as raw:
        row = raw.execute("SELECT count(*) FROM items").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("write", [lambda s: s.add(Item(id=9, name="nine"))])
def test_a_read_only_transaction_still_refuses_writes(
    pg: Database, write: Callable[[sa.orm.Session], None]
) -> None:
    with pytest.raises(DatabaseError, match="read-only"), pg.transaction(read_only=True) as session:
        assert session.get(Item, 1) is not None
        write(session)
        session.flush()
    assert _count_elsewhere(pg) == 1


def test_a_transaction_scoped_advisory_lock_begins_the_transaction_and_is_held(
    pg: Database, statement_log: StatementLog
) -> None:
    statement_log.mark()
    with pg.transaction() as session:
        session.execute(sa.text("SELECT pg_advisory_xact_lock(42)"))
        held = _count_locks_elsewhere(pg)
    assert held == 1  # without a BEGIN the lock would end with its own statement
    assert statement_log.statements()[:2] == ["BEGIN", "SELECT"]


# a SELECT can act: what it does must belong to the transaction, as a write's does
_ACTING_SELECTS = {
    "a function that writes": "SELECT put_item(3)",
    "a local setting": "SELECT set_config('app.tenant', 'a', true)",
}


@pytest.mark.parametrize("select", list(_ACTING_SELECTS.values()), ids=list(_ACTING_SELECTS))
def test_a_select_calling_a_function_that_may_act_begins_the_transaction(
    pg: Database, statement_log: StatementLog, select: str
) -> None:
    pg.sql(
        "CREATE FUNCTION put_item(n integer) RETURNS integer LANGUAGE sql AS "
        "$$ INSERT INTO items (id, name) VALUES (n, 'put') RETURNING n $$"
    )
    statement_log.mark()
    with pytest.raises(RuntimeError), pg.transaction() as session:
        session.execute(sa.text(select))
        tenant = session.scalar(sa.text("SELECT current_setting('app.tenant', true)"))
        raise RuntimeError("undo")
    assert statement_log.statements()[:2] == ["BEGIN", "SELECT"]
    assert _count_elsewhere(pg) == 1  # rolled back with the transaction, not autocommitted
    if "set_config" in select:
        assert tenant == "a"  # set for the rest of the transaction, not for one statement


async def test_an_async_select_calling_a_function_that_writes_is_rolled_back_with_its_transaction(
    apg: AsyncDatabase,
) -> None:
    await apg.sql(
        "CREATE FUNCTION put_item(n integer) RETURNS integer LANGUAGE sql AS "
        "$$ INSERT INTO items (id, name) VALUES (n, 'put') RETURNING n $$"
    )
    with pytest.raises(RuntimeError):
        async with apg.transaction() as session:
            await session.execute(sa.select(sa.func.put_item(3)))
            raise RuntimeError("undo")
    async with apg.transaction() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Item)) == 1


def _count_locks_elsewhere(db: Database) -> int:
    with psycopg.connect(with_driver(db.engine.url.render_as_string(False), "postgresql")) as raw:
        row = raw.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert row is not None
    return int(row[0])


# A read-only deferred transaction ends by closing its session, not by committing it
# (dalkit.transaction.deferred.nothing_to_commit): the server sees the same nothing, and
# everything a caller can observe of a commit must still happen.


async def test_a_read_only_transaction_still_runs_on_commit_and_returns_usable_entities(
    apg: AsyncDatabase, statement_log: StatementLog
) -> None:
    from dalkit import on_commit

    ran: list[str] = []
    statement_log.mark()
    async with apg.transaction() as session:
        item = await session.get(Item, 1)
        on_commit(lambda: ran.append("committed"))
    assert ran == ["committed"]
    assert item is not None
    assert item.name == "one"  # loaded, detached, not expired
    assert statement_log.statements() == ["SELECT"]
    assert apg.get_stats()["pool"]["checked_out"] == 0


def test_session_commit_listeners_see_a_read_only_transaction_commit(
    pg: Database, statement_log: StatementLog
) -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    seen: list[str] = []

    def before(session: Session) -> None:
        seen.append("before_commit")

    def after(session: Session) -> None:
        seen.append("after_commit")

    event.listen(Session, "before_commit", before)
    event.listen(Session, "after_commit", after)
    try:
        statement_log.mark()
        with pg.transaction() as session:
            assert session.get(Item, 1) is not None
    finally:
        event.remove(Session, "before_commit", before)
        event.remove(Session, "after_commit", after)
    # a listener makes the commit a real one, which still sends nothing but the read
    assert seen == ["before_commit", "after_commit"]
    assert statement_log.statements() == ["SELECT"]


def test_a_read_then_a_write_is_committed_and_a_locking_read_ends_with_commit(
    pg: Database, statement_log: StatementLog
) -> None:
    statement_log.mark()
    with pg.transaction() as session:
        session.execute(sa.select(Item).where(Item.id == 1).with_for_update()).scalar_one()
    with pg.transaction() as session:
        assert session.get(Item, 1) is not None
        session.execute(sa.update(Item).where(Item.id == 1).values(name="uno"))
    with pg.transaction() as session:
        assert session.get(Item, 1, populate_existing=True).name == "uno"  # type: ignore[union-attr]
    assert statement_log.statements() == [
        "BEGIN", "SELECT", "COMMIT", "SELECT", "BEGIN", "UPDATE", "COMMIT", "SELECT",
    ]  # fmt: skip


def _idle(connection: sa.Connection) -> bool:
    driver: Any = connection.connection.dbapi_connection
    return bool(driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)


def test_a_connection_that_wrote_is_back_in_autocommit_after_commit_or_rollback(
    postgres_database_url: str, statement_log: StatementLog
) -> None:
    # psycopg sends the deferred BEGIN itself (autocommit switched off before the first write):
    # the transaction ends with COMMIT or ROLLBACK, and the next read runs without a BEGIN
    engine = sa.create_engine(
        with_driver(postgres_database_url, "postgresql+psycopg"),
        execution_options=deferred.execution_options(TransactionOptions()),
    )
    deferred.install(engine)
    insert = sa.text("INSERT INTO switched (id) VALUES (:id)")
    count = sa.text("SELECT count(*) FROM switched")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS switched"))
            connection.execute(sa.text("CREATE TABLE switched (id int PRIMARY KEY)"))
            connection.commit()
            statement_log.mark()
            connection.execute(insert, {"id": 1})
            connection.commit()
            assert _idle(connection)
            assert connection.execute(count).scalar_one() == 1
            with pytest.raises(sa.exc.IntegrityError):
                connection.execute(insert, {"id": 1})
            connection.rollback()
            assert _idle(connection)
            assert connection.execute(count).scalar_one() == 1
            connection.commit()
    finally:
        engine.dispose()
    assert statement_log.statements() == [
        "BEGIN", "INSERT", "COMMIT", "SELECT", "BEGIN", "INSERT", "ROLLBACK", "SELECT",
    ]  # fmt: skip


async def test_a_default_database_has_no_engine_event_on_its_request_path(
    postgres_database_url: str,
) -> None:
    # one listener on an Engine makes each of its connections dispatch every event: dalkit's
    # per-statement work runs as statement hooks instead (dalkit.engine.statement_hooks).
    # N+1 detection, which the test plugin turns on, is off by default and listens to BEGIN.
    apg = AsyncDatabase(with_driver(postgres_database_url, "postgresql+asyncpg"), nplusone="off")
    await create_all_async(apg)
    async with apg.transaction() as session:
        assert await session.get(Item, 1) is None
        assert session.bind is not None
        assert not session.bind.sync_engine._has_events
    pg = Database(with_driver(postgres_database_url, "postgresql+psycopg"), nplusone="off")
    try:
        with pg.transaction() as sync_session:
            assert sync_session.get(Item, 1) is None
            assert isinstance(sync_session.bind, sa.Engine)
            assert not sync_session.bind._has_events
        assert not pg.engine._has_events
    finally:
        pg.dispose()
    assert not apg.engine.sync_engine._has_events
    await apg.dispose()


@pytest.mark.parametrize("fail", [False, True])
def test_a_raw_driver_write_before_the_first_read_stays_in_the_transaction(
    pg: Database, statement_log: StatementLog, fail: bool
) -> None:
    # psycopg begins on its own for a write sent straight through the driver: the plain read
    # after it must not switch autocommit on, and the write commits or rolls back with the rest
    class Boom(Exception):
        pass

    with pytest.raises(Boom) if fail else contextlib.nullcontext():
        with pg.transaction() as session:
            driver: Any = session.connection().connection.dbapi_connection
            with driver.cursor() as cursor:
                cursor.execute("INSERT INTO items (id, name) VALUES (7, 'raw')")
            assert session.get(Item, 7) is not None
            if fail:
                raise Boom
    with pg.transaction() as session:
        assert (session.get(Item, 7) is None) is fail


class _Items(Repository[Item]):
    pass


class _AsyncItems(AsyncRepository[Item]):
    pass


def test_a_plain_read_before_any_write_holds_no_pooled_connection(
    pg: Database, statement_log: StatementLog
) -> None:
    pool = cast(QueuePool, pg.engine.pool)
    statement_log.mark()
    with pg.transaction() as session:
        first = _Items(session).get(1)
        assert first is not None
        assert first.name == "one"
        assert pool.checkedout() == 0  # given back with the read, not at the end
        assert _Items(session).get(1) is first  # the session's entity all the same
        session.add(Item(id=2, name="two"))
        _Items(session).list()
        assert pool.checkedout() == 1  # once begun, the transaction keeps its connection
    with pg.session() as session:
        assert [item.id for item in _Items(session).list()] == [1, 2]
    assert statement_log.statements() == ["SELECT", "BEGIN", "INSERT", "SELECT", "COMMIT", "SELECT"]


async def test_an_async_plain_read_before_any_write_holds_no_pooled_connection(
    apg: AsyncDatabase, statement_log: StatementLog
) -> None:
    pool = cast(QueuePool, apg.engine.sync_engine.pool)
    statement_log.mark()
    async with apg.transaction() as session:
        assert (await _AsyncItems(session).get(1)) is not None
        assert pool.checkedout() == 0
        await _AsyncItems(session).add(Item(id=2, name="two"))
        assert len(await _AsyncItems(session).list()) == 2  # the transaction's own write
        assert pool.checkedout() == 1
    assert statement_log.statements() == ["SELECT", "BEGIN", "INSERT", "SELECT", "COMMIT"]


def test_a_plain_read_holds_no_pooled_connection_in_a_process_where_a_database_caches(
    pg: Database, tmp_path: Path
) -> None:
    # the query cache listens to every session's after_begin (once per process, for any
    # database): it has nothing to do for a read before anything began
    cached = Database(f"sqlite:///{tmp_path / 'c.db'}", cache=QueryCache(MemoryBackend()))
    try:
        pool = cast(QueuePool, pg.engine.pool)
        with pg.transaction() as session:
            assert _Items(session).get(1) is not None
            assert pool.checkedout() == 0
    finally:
        cached.dispose()


def test_a_plain_read_begins_the_session_when_an_after_begin_listener_may_prepare_it(
    pg: Database,
) -> None:
    began: list[object] = []
    pool = cast(QueuePool, pg.engine.pool)
    with pg.transaction() as session:
        event.listen(session, "after_begin", lambda *args: began.append(args[2]))
        assert _Items(session).get(1) is not None
        assert pool.checkedout() == 1  # read in the session's transaction, its listener run
        assert len(began) == 1


def test_a_plain_read_keeps_to_the_session_while_n_plus_one_detection_counts(
    postgres_database_url: str,
) -> None:
    # N+1 shapes are counted per transaction of a connection: a loop of gets before anything
    # began must be seen together, as on the session's connection
    db = Database(with_driver(postgres_database_url, "postgresql+psycopg"), nplusone="raise")
    try:
        create_all(db)
        with db.transaction() as session:
            session.add(Item(id=1, name="one"))
        with pytest.raises(NPlusOneError), db.transaction() as session:
            for _ in range(10):
                session.expunge_all()
                _Items(session).get(1)
    finally:
        db.dispose()
