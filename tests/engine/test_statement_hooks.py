"""The statement hooks' ``after`` kind and their transaction-end hooks, on a plain SQLAlchemy
engine over a SQLite file: what they see, and when they run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

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

    def ended(dbapi_connection: Any, committed: bool) -> None:
        # the pool's connection: its info is the pool record's, shared with the Connection
        ends.append((committed, dbapi_connection.info.get("marked", False)))

    hooks = hooks_for(engine.dialect)
    hooks.add_transaction_end(ended)
    wrapped = engine.dialect.do_commit
    hooks.add_transaction_end(ended)
    hooks.add_transaction_end(lambda _c, _committed: None)
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
        hooks_for(engine.dialect).add_transaction_end(lambda _c, committed: ends.append(committed))
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.exec_driver_sql("INSERT INTO child (id, parent_id) VALUES (1, 99)")
            with pytest.raises(sa.exc.IntegrityError):
                connection.commit()  # the deferred foreign key fails at COMMIT
        # a failed COMMIT may have been applied: the hook is told it was a COMMIT
        assert ends == [True]
    finally:
        engine.dispose()
