"""on_commit / on_rollback: after the outermost outcome, savepoint-aware, robust or not, and
awaited under the async API."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database, on_commit, on_rollback

from .models import Item, create_all, create_all_async, item_names


def test_on_commit_runs_after_the_commit_is_visible_to_others(db: Database) -> None:
    create_all(db)
    seen: list[list[str]] = []

    def fn(session: Session) -> None:
        session.add(Item(name="visible"))
        on_commit(lambda: seen.append(item_names(db)))

    db.run_transaction(fn)
    assert seen == [["visible"]]


def test_on_commit_never_runs_when_the_transaction_rolls_back(db: Database) -> None:
    ran: list[str] = []
    with pytest.raises(RuntimeError), db.transaction():
        on_commit(lambda: ran.append("commit"))
        on_rollback(lambda: ran.append("rollback"))
        raise RuntimeError("boom")
    assert ran == ["rollback"]


def test_on_rollback_never_runs_when_the_transaction_commits(db: Database) -> None:
    ran: list[str] = []
    with db.transaction():
        on_rollback(lambda: ran.append("rollback"))
        on_commit(lambda: ran.append("commit"))
    assert ran == ["commit"]


def test_callbacks_of_a_rolled_back_savepoint_never_run_but_the_outer_ones_do(
    db: Database,
) -> None:
    create_all(db)
    ran: list[str] = []
    with db.transaction() as session:
        session.add(Item(name="outer"))
        on_commit(lambda: ran.append("outer"))
        with pytest.raises(RuntimeError), db.transaction(propagation="nested") as inner:
            inner.add(Item(name="inner"))
            on_commit(lambda: ran.append("inner"))
            raise RuntimeError("inner fails")
        with db.transaction(propagation="nested"):
            on_commit(lambda: ran.append("released savepoint"))
    assert ran == ["outer", "released savepoint"]
    assert item_names(db) == ["outer"]


def test_a_joined_function_registers_with_the_outermost_transaction(db: Database) -> None:
    ran: list[str] = []

    def inner() -> None:
        on_commit(lambda: ran.append("inner"))
        assert ran == []  # nothing runs before the outermost commit

    with db.transaction():
        db.run_transaction(inner)
        assert ran == []
    assert ran == ["inner"]


def test_a_robust_callback_that_fails_is_logged_and_the_rest_still_run(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise OSError("mail server down")

    with caplog.at_level(logging.ERROR, logger="dalkit.transaction"), db.transaction():
        on_commit(broken, robust=True)
        on_commit(lambda: ran.append("after"))
    assert ran == ["after"]
    assert "broken" in caplog.text
    assert "mail server down" in caplog.text


def test_a_failing_callback_raises_after_the_commit_and_stops_the_rest(db: Database) -> None:
    create_all(db)
    ran: list[str] = []

    def broken() -> None:
        raise OSError("mail server down")

    def fn(session: Session) -> None:
        session.add(Item(name="committed anyway"))
        on_commit(broken)
        on_commit(lambda: ran.append("never"))

    with pytest.raises(OSError, match="mail server down"):
        db.run_transaction(fn)
    assert db.transaction_stats()["committed"] == 1
    assert item_names(db) == ["committed anyway"]
    assert ran == []


def test_a_failing_rollback_callback_cannot_hide_the_original_error(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise OSError("cleanup failed")

    with (
        caplog.at_level(logging.ERROR, logger="dalkit.transaction"),
        pytest.raises(KeyError),
        db.transaction(),
    ):
        on_rollback(broken)
        raise KeyError("the real problem")
    assert "cleanup failed" in caplog.text


def test_a_sync_transaction_refuses_a_coroutine_callback(db: Database) -> None:
    async def notify() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine"), db.transaction():
        on_commit(notify)


async def test_async_callbacks_are_awaited_before_run_transaction_returns(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    ran: list[str] = []

    async def notify(name: str) -> None:
        ran.append(name)

    async def fn(session: AsyncSession) -> str:
        session.add(Item(name="x"))
        on_commit(lambda: notify("coroutine"))
        on_commit(lambda: ran.append("plain"))
        on_rollback(lambda: notify("never"))
        return "done"

    assert await async_db.run_transaction(fn) == "done"
    assert ran == ["coroutine", "plain"]


async def test_async_savepoint_rollback_discards_its_callbacks(async_db: AsyncDatabase) -> None:
    await create_all_async(async_db)
    ran: list[str] = []

    async def inner(session: AsyncSession) -> None:
        session.add(Item(name="inner"))
        on_commit(lambda: ran.append("inner"))
        on_rollback(lambda: ran.append("inner undone"))
        await session.flush()
        raise LookupError("inner fails")

    async def outer(session: AsyncSession) -> None:
        on_commit(lambda: ran.append("outer"))
        with pytest.raises(LookupError):
            await async_db.transactional(propagation="nested").run(inner)
        count = await session.scalar(sa.select(sa.func.count()).select_from(Item))
        assert count == 0

    await async_db.run_transaction(outer)
    assert ran == ["outer", "inner undone"]
