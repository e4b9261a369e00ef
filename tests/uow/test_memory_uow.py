"""The in-memory units of work: a small service layer tested with no database (cosmicpython's
FakeUnitOfWork), the same service run once on SQLite to show it is the real unit's drop-in,
and the unit's states, rollback, hooks and events, sync and async."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dalkit import (
    AsyncRepository,
    Database,
    Repository,
    TransactionError,
    UniqueViolationError,
    UnitOfWork,
    UnitOfWorkError,
)
from dalkit.uow import AsyncInMemoryUnitOfWork, InMemoryUnitOfWork

from .conftest import RecordingBus
from .models import Base, User, UserRegistered, UserRenamed


class UserRepository(Repository[User]):
    filterable = ("email", "name")


class AsyncUserRepository(AsyncRepository[User]):
    filterable = ("email", "name")


# --- the service layer under test: it knows units of work, not databases ------------------------

Units = Callable[[], InMemoryUnitOfWork | UnitOfWork]


class EmailTakenError(Exception):
    """A domain error of the example service."""


def register_user(units: Units, email: str, name: str) -> int:
    with units() as uow:
        users = uow.repository(UserRepository)
        if users.exists(email=email):
            raise EmailTakenError(email)
        user = users.add(User(email=email, name=name))
        user.record_event(UserRegistered(email=email))
        return user.id


def rename_user(units: Units, user_id: int, name: str) -> None:
    with units() as uow:
        user = uow.repository(UserRepository).update(user_id, name=name)
        uow.publish(UserRenamed(user_id=user.id, name=name), aggregate=user)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def units(bus: RecordingBus) -> Units:
    """Fresh in-memory units sharing one set of repositories: a database that is a dict."""
    data: dict[type[Any], Any] = {}
    return lambda: InMemoryUnitOfWork(data, event_bus=bus)


def stored_names(units: Units) -> list[str]:
    with units() as uow:
        return [u.name for u in uow.repository(UserRepository).list()]


def test_a_service_commits_its_work_and_the_events_follow(units: Units, bus: RecordingBus) -> None:
    user_id = register_user(units, "ada@example.com", "Ada")
    rename_user(units, user_id, "Ada L.")
    assert stored_names(units) == ["Ada L."]
    registered, renamed = bus.seen
    assert isinstance(registered, UserRegistered)
    assert registered.email == "ada@example.com"
    assert isinstance(renamed, UserRenamed)
    assert (renamed.user_id, renamed.name) == (user_id, "Ada L.")


def test_a_service_error_rolls_back_and_dispatches_nothing(units: Units, bus: RecordingBus) -> None:
    register_user(units, "ada@example.com", "Ada")
    with pytest.raises(EmailTakenError):
        register_user(units, "ada@example.com", "Ada again")
    assert stored_names(units) == ["Ada"]
    assert [type(e) for e in bus.seen] == [UserRegistered]


def test_the_same_service_runs_on_a_real_database(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        db.create_all(Base.metadata)
        user_id = register_user(lambda: UnitOfWork(db), "ada@example.com", "Ada")
        rename_user(lambda: UnitOfWork(db), user_id, "Ada L.")
        with UnitOfWork(db) as uow:
            assert uow.repository(UserRepository).get(user_id).name == "Ada L."
    finally:
        db.dispose()


# --- the unit itself ----------------------------------------------------------------------------


def test_commits_when_the_block_ends_cleanly() -> None:
    with InMemoryUnitOfWork() as uow:
        uow.repository(UserRepository).add(User(email="a@example.com", name="a"))
        assert not uow.committed
    assert uow.committed
    assert uow.state == "committed"


def test_rolls_back_uncommitted_work_when_the_block_raises() -> None:
    uow = InMemoryUnitOfWork()
    with pytest.raises(RuntimeError), uow:
        uow.repository(UserRepository).add(User(email="a@example.com", name="a"))
        raise RuntimeError("boom")
    assert not uow.committed
    assert uow.state == "rolled_back"
    with InMemoryUnitOfWork(uow.repositories) as after:
        assert after.repository(UserRepository).count() == 0


def test_rollback_undoes_updates_and_deletes_of_committed_entities() -> None:
    with InMemoryUnitOfWork() as first:
        users = first.repository(UserRepository)
        ada, bob = users.add_many(
            [User(email="ada@example.com", name="Ada"), User(email="bob@example.com", name="Bob")]
        )
    with InMemoryUnitOfWork(first.repositories) as second:
        users = second.repository(UserRepository)
        users.update(ada.id, name="changed")
        users.delete(bob.id)
        users.add(User(email="new@example.com", name="New"))
        second.rollback()
    assert second.state == "rolled_back"
    assert (ada.name, second.committed) == ("Ada", False)
    with InMemoryUnitOfWork(first.repositories) as third:
        assert [u.name for u in third.repository(UserRepository).list()] == ["Ada", "Bob"]


def test_constraints_hold_across_units_sharing_the_data() -> None:
    with InMemoryUnitOfWork() as first:
        first.repository(UserRepository).add(User(email="a@example.com", name="a"))
    with pytest.raises(UniqueViolationError), InMemoryUnitOfWork(first.repositories) as second:
        second.repository(UserRepository).add(User(email="a@example.com", name="b"))
    assert second.state == "rolled_back"


def test_a_unit_is_entered_once_and_used_only_inside_its_block() -> None:
    uow = InMemoryUnitOfWork()
    with pytest.raises(UnitOfWorkError, match="before the with-block"):
        uow.repository(UserRepository)
    with uow:
        pass
    with pytest.raises(UnitOfWorkError, match="after it ended"):
        uow.commit()
    with pytest.raises(UnitOfWorkError, match="entered once"), uow:
        pass


def test_events_are_dispatched_after_the_commit_in_the_order_recorded(bus: RecordingBus) -> None:
    seen_at_dispatch: list[bool] = []
    bus.subscribe(UserRenamed, lambda event: seen_at_dispatch.append(uow.committed))
    with InMemoryUnitOfWork(event_bus=bus) as uow:
        user = uow.repository(UserRepository).add(User(email="a@example.com", name="a"))
        user.record_event(UserRegistered(email="a@example.com"))
        uow.publish(UserRenamed(user_id=user.id, name="b"))
        assert bus.seen == []
    assert [type(e) for e in bus.seen] == [UserRegistered, UserRenamed]
    assert uow.events == bus.seen
    assert seen_at_dispatch == [True]


def test_without_an_event_bus_the_events_stay_on_the_unit() -> None:
    with InMemoryUnitOfWork() as uow:
        uow.publish(UserRegistered(email="a@example.com"))
    assert [type(e) for e in uow.events] == [UserRegistered]


def test_hooks_run_before_and_after_the_commit_and_after_a_rollback() -> None:
    calls: list[str] = []
    with InMemoryUnitOfWork() as uow:
        uow.hooks.before_commit(lambda u: calls.append(f"before {u.state}"))
        uow.hooks.after_commit(lambda u: calls.append(f"after {u.state}"))
    with InMemoryUnitOfWork() as failed:
        failed.hooks.after_rollback(lambda u: calls.append(f"rollback {u.state}"))
        failed.rollback()
    assert calls == ["before open", "after committed", "rollback rolled_back"]


class UserUnits(InMemoryUnitOfWork):
    users: UserRepository


def test_a_mapped_class_gets_an_in_memory_repository_with_every_default() -> None:
    with InMemoryUnitOfWork() as uow:
        uow.repository(User).add(User(email="a@example.com", name="a"))
        assert uow.repository(User).count(name="a") == 1


def test_repositories_declared_on_a_subclass_are_bound_on_entering() -> None:
    with UserUnits() as uow:
        uow.users.add(User(email="a@example.com", name="a"))
        assert uow.users is uow.repository(UserRepository)
        assert uow.users.count(email="a@example.com") == 1


# --- async --------------------------------------------------------------------------------------


async def test_an_async_unit_commits_rolls_back_and_dispatches(bus: RecordingBus) -> None:
    async with AsyncInMemoryUnitOfWork(event_bus=bus) as uow:
        users = uow.repository(AsyncUserRepository)
        user = await users.add(User(email="a@example.com", name="a"))
        user.record_event(UserRegistered(email="a@example.com"))
    assert uow.committed
    with pytest.raises(RuntimeError):
        async with AsyncInMemoryUnitOfWork(uow.repositories, event_bus=bus) as failed:
            await failed.repository(AsyncUserRepository).update(user.id, name="b")
            failed.publish(UserRenamed(user_id=user.id, name="b"))
            raise RuntimeError("boom")
    assert user.name == "a"
    assert [type(e) for e in bus.seen] == [UserRegistered]


async def test_async_hooks_may_be_coroutines() -> None:
    calls: list[str] = []

    async def after(uow: AsyncInMemoryUnitOfWork) -> None:
        calls.append(uow.state)

    async with AsyncInMemoryUnitOfWork() as uow:
        uow.hooks.after_commit(after)
    assert calls == ["committed"]


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_repository_held_past_its_unit_of_work_is_refused_as_a_sql_one_is(ending: str) -> None:
    # before: writes through it were kept and seen by the next unit, even after a rollback,
    # where the SQL unit of work's session raises TransactionError
    with InMemoryUnitOfWork() as uow:
        users = uow.repository(UserRepository)
        users.add(User(email="a@example.com", name="a"))
        if ending == "rollback":
            uow.rollback()
    with pytest.raises(TransactionError, match="unit of work was"):
        users.add(User(email="late@example.com", name="late"))
    with pytest.raises(TransactionError, match="unit of work was"):
        users.count()
    with InMemoryUnitOfWork(uow.repositories) as after:
        again = after.repository(UserRepository)
        assert again is users  # handed out again, it works again
        assert [u.name for u in again.list()] == (["a"] if ending == "commit" else [])


async def test_an_async_repository_held_past_its_unit_of_work_is_refused() -> None:
    async with AsyncInMemoryUnitOfWork() as uow:
        users = uow.repository(AsyncUserRepository)
    with pytest.raises(TransactionError, match="unit of work was committed"):
        await users.add(User(email="late@example.com", name="late"))
