"""Domain events are never dropped by a commit: an entity still holding recorded events when a
session that is not a unit of work's commits (``db.transaction()``, ``db.session()``, a session's
own ``commit()``) makes the commit raise UncollectedEventsError before COMMIT, nothing written;
a unit of work, alone or inside a transaction, collects them; a rollback drops them quietly, and
a read-only transaction keeps its short commit. This async file is the source of
``test_uncollected.py``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncUnitOfWork
from dalkit.outbox.uncollected import UncollectedEventsError
from dalkit.transaction import deferred

from .conftest import RecordingBus
from .models import User, UserRenamed


@pytest.fixture
async def user(async_database: AsyncDatabase) -> AsyncDatabase:
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add(User(id=1, email="a@x", name="Ada"))
    return async_database


async def _name(db: AsyncDatabase) -> str:
    async with db.session() as session:
        return str((await session.execute(sa.select(User.name))).scalar_one())


def _rename(found: User | None, name: str) -> None:
    assert found is not None
    found.name = name
    found.record_event(UserRenamed(user_id=found.id, name=name))


async def test_a_transaction_that_would_drop_events_refuses_to_commit(user: AsyncDatabase) -> None:
    with pytest.raises(UncollectedEventsError, match=r"1 domain event.* recorded by User"):
        async with user.transaction() as session:
            _rename(await session.get(User, 1), "Grace")
    assert await _name(user) == "Ada"  # rolled back, not committed without its event


async def test_a_session_commit_that_would_drop_events_refuses(user: AsyncDatabase) -> None:
    # a session of one's own (inside db.session() the block owns the commit, and refuses one)
    with pytest.raises(UncollectedEventsError):
        async with user.session_factory() as session:
            _rename(await session.get(User, 1), "Grace")
            await session.commit()
    assert await _name(user) == "Ada"


async def test_a_read_only_transaction_holding_an_event_refuses_too(user: AsyncDatabase) -> None:
    # nothing to write: the short commit of a read-only transaction runs the check as well
    with pytest.raises(UncollectedEventsError):
        async with user.transaction() as session:
            found = await session.get(User, 1)
            assert found is not None
            found.record_event(UserRenamed(user_id=1, name="Ada"))


async def test_a_unit_of_work_collects_them_alone_or_inside_a_transaction(
    user: AsyncDatabase, bus: RecordingBus
) -> None:
    async with AsyncUnitOfWork(user, event_bus=bus) as uow:
        _rename(await uow.session.get(User, 1), "Grace")
    async with user.transaction():
        async with AsyncUnitOfWork(user, event_bus=bus) as uow:
            _rename(await uow.session.get(User, 1), "Hedy")
    assert [e.name for e in bus.seen if isinstance(e, UserRenamed)] == ["Grace", "Hedy"]
    assert await _name(user) == "Hedy"


async def test_a_rollback_drops_them_quietly(user: AsyncDatabase) -> None:
    with pytest.raises(LookupError):
        async with user.transaction() as session:
            _rename(await session.get(User, 1), "Grace")
            raise LookupError  # the caller's own error, not UncollectedEventsError
    assert await _name(user) == "Ada"


async def test_a_read_only_transaction_without_events_keeps_its_short_commit(
    user: AsyncDatabase,
) -> None:
    async with user.transaction() as session:
        assert await session.get(User, 1) is not None
        # PostgreSQL defers BEGIN at READ COMMITTED, and its read sent no BEGIN to commit
        short = user.engine.dialect.name == "postgresql"
        assert deferred.nothing_to_commit(session) is short
