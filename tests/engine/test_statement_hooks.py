"""The statement hooks' ``after`` kind and their transaction-end hooks, on a plain SQLAlchemy
engine over a SQLite file (two-phase ends on PostgreSQL): what they see, and when they run."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import greenlet_spawn

from dalkit.engine.statement_hooks import hooks_for

_items = sa.Table(
    "items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(20)),
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hooks.db'}")
    _items.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def test_an_after_hook_sees_each_statement_that_succeeded_with_its_context(
    engine: sa.Engine,
) -> None:
    seen: list[tuple[str, Any, bool]] = []

    def after(cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        assert context.root_connection is connection
        seen.append((statement.split()[0], parameters, many))

    hooks = hooks_for(engine.dialect)
    hooks.add_after(after)
    hooks.add_after(after)  # once only
    with engine.begin() as connection:
        connection.execute(_items.insert(), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        connection.execute(sa.select(_items).where(_items.c.id == 1)).all()
        connection.exec_driver_sql("DELETE FROM items WHERE id = 2")
        with pytest.raises(sa.exc.OperationalError):
            connection.exec_driver_sql("SELECT * FROM missing_table")
    # two rows without RETURNING are one executemany; the failed statement is not seen
    assert seen == [
        ("INSERT", [(1, "a"), (2, "b")], True),
        ("SELECT", (1,), False),
        ("DELETE", (), False),
    ]


def test_an_after_hook_sees_an_executemany(engine: sa.Engine) -> None:
    seen: list[bool] = []
    hooks_for(engine.dialect).add_after(lambda _c, _s, _p, _x, many: seen.append(many))
    with engine.begin() as connection:
        connection.execute(sa.update(_items).values(name=sa.bindparam("n")), [{"n": "a"}] * 2)
    assert seen == [True]


def test_timers_and_after_hooks_both_run_once_per_statement(engine: sa.Engine) -> None:
    calls: list[str] = []
    hooks = hooks_for(engine.dialect)
    hooks.add_timer(lambda *_args: calls.append("timer"))
    hooks.add_after(lambda *_args: calls.append("after"))
    with engine.connect() as connection:
        connection.execute(sa.select(1)).all()
    assert calls == ["timer", "after"]


def test_transaction_end_hooks_see_each_commit_and_rollback_but_no_savepoint(
    engine: sa.Engine,
) -> None:
    ends: list[tuple[bool, bool]] = []

    def ended(dbapi_connection: Any, committed: bool, foreign: bool) -> None:
        assert not foreign
        # the pool's connection: its info is the pool record's, shared with the Connection
        ends.append((committed, dbapi_connection.info.get("marked", False)))

    hooks = hooks_for(engine.dialect)
    hooks.add_transaction_end(ended)
    wrapped = engine.dialect.do_commit
    hooks.add_transaction_end(ended)
    hooks.add_transaction_end(lambda _c, _committed, _foreign: None)
    assert engine.dialect.do_commit is wrapped  # wrapped once; a hook is added once
    with engine.connect() as connection:
        connection.info["marked"] = True
        connection.execute(_items.insert().values(id=1, name="a"))
        with connection.begin_nested() as savepoint:
            connection.execute(_items.insert().values(id=2, name="b"))
            savepoint.rollback()
        connection.commit()
        connection.execute(_items.insert().values(id=3, name="c"))
        connection.rollback()
        connection.execute(sa.select(_items)).all()
    # COMMIT, ROLLBACK, then the pool's reset of the connection closed inside a transaction
    assert ends == [(True, True), (False, True), (False, True)]
    with engine.connect() as connection:
        assert connection.execute(sa.select(_items.c.id)).scalars().all() == [1]


def test_a_transaction_end_hook_runs_when_the_commit_fails(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'deferred.db'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            connection.exec_driver_sql(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        ends: list[bool] = []
        hooks_for(engine.dialect).add_transaction_end(
            lambda _c, committed, _foreign: ends.append(committed)
        )
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.exec_driver_sql("INSERT INTO child (id, parent_id) VALUES (1, 99)")
            with pytest.raises(sa.exc.IntegrityError):
                connection.commit()  # the deferred foreign key fails at COMMIT
        # a failed COMMIT may have been applied: the hook is told it was a COMMIT
        assert ends == [True]
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_transaction_end_hooks_see_each_two_phase_end_first(
    driver: str, postgres_database_url: str
) -> None:
    # psycopg ends a two-phase transaction with the driver's tpc_commit(), never do_commit;
    # SQLAlchemy's PostgreSQL dialect (asyncpg's) sends COMMIT PREPARED and then calls
    # do_rollback to leave the block it opens: that must not reach the hooks as the end
    url = sa.make_url(postgres_database_url).set(drivername=f"postgresql+{driver}")
    loop = asyncio.new_event_loop()
    if driver == "asyncpg":
        engine = create_async_engine(url).sync_engine

        def run(fn: Callable[[], Any]) -> Any:
            return loop.run_until_complete(greenlet_spawn(fn))
    else:
        engine = sa.create_engine(url)

        def run(fn: Callable[[], Any]) -> Any:
            return fn()

    ends: list[tuple[bool, bool]] = []
    hooks_for(engine.dialect).add_transaction_end(
        lambda _c, committed, foreign: ends.append((committed, foreign))
    )
    try:
        run(lambda: _create_table(engine))
        for commit in (True, False):
            del ends[:]
            run(functools.partial(_two_phase_round, engine, commit=commit))
            # then, at most, the pool's reset of the connection given back
            assert ends[0] == (commit, False)
            assert ends[1:] in ([], [(False, False)])
        xid = run(lambda: _prepared_and_left(engine))
        del ends[:]
        run(lambda: _commit_recovered(engine, xid))
        assert ends[0] == (True, True)  # recovered: what it wrote is unknown here
    finally:
        run(engine.dispose)
        loop.close()


def _create_table(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE tp (id int)")


def _two_phase_round(engine: sa.Engine, *, commit: bool) -> None:
    with engine.connect() as connection:
        transaction = connection.begin_twophase()
        connection.exec_driver_sql("INSERT INTO tp VALUES (1)")
        transaction.prepare()
        if commit:
            transaction.commit()
        else:
            transaction.rollback()


def _prepared_and_left(engine: sa.Engine) -> str:
    """A transaction prepared and left by its connection, as a crashed process leaves it."""
    xid = f"hooks-{engine.dialect.driver}"
    with engine.connect() as connection:
        connection.exec_driver_sql("INSERT INTO tp VALUES (2)")
        connection.exec_driver_sql(f"PREPARE TRANSACTION '{xid}'")
        connection.commit()
    return xid


def _commit_recovered(engine: sa.Engine, xid: str) -> None:
    with engine.connect() as connection:
        connection.commit_prepared(xid, recover=True)
