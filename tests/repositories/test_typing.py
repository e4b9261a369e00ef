"""The generic signatures, checked by mypy (``mypy --strict tests/repositories/test_typing.py``)
and run by pytest: a ``Repository[User]`` hands back ``User``s."""

from __future__ import annotations

from typing import assert_type

from sqlalchemy.orm import Session

from dalkit import (
    AsyncInMemoryRepository,
    AsyncRepository,
    CursorPage,
    InMemoryRepository,
    Page,
    Repository,
    Spec,
)
from dalkit.repository.abstract import AbstractRepository

from .models import User

KEY = 10**6  # clear of the ids that sequences hand out in the shared test database


class Users(Repository[User]):
    cursor_secret = "typing-test-cursor-secret"


class AsyncUsers(AsyncRepository[User]):
    pass


class FakeUsers(InMemoryRepository[User]):
    pass


class AsyncFakeUsers(AsyncInMemoryRepository[User]):
    pass


def check_sync(users: Users) -> None:
    assert_type(users.get(KEY), User)
    assert_type(users.get_or_none(KEY), User | None)
    assert_type(users.get_many([KEY]), list[User])
    assert_type(users.list(), list[User])
    assert_type(users.first(), User | None)
    assert_type(users.find(name="x"), list[User])
    assert_type(users.search("x"), list[User])
    assert_type(users.paginate(), Page[User])
    assert_type(users.paginate_cursor(), CursorPage[User])
    assert_type(users.add(User(email="f", name="f")), User)
    assert_type(users.update(KEY, name="y"), User)
    assert_type(users.upsert({"email": "e", "name": "n"}, on=["email"]), User)
    assert_type(users.count(), int)
    assert_type(users.exists(), bool)
    assert_type(users.bulk_insert([]), int)


def service(users: AbstractRepository[User]) -> list[User]:
    """A service typed against the abstract repository takes either backend."""
    assert_type(users.get(KEY), User)
    return users.search("n", Spec(name="n"), sort="name")


async def check_async(users: AsyncUsers) -> None:
    assert_type(await users.get(KEY), User)
    assert_type(await users.list(), list[User])
    assert_type(await users.paginate(), Page[User])
    assert_type(await users.paginate_cursor(), CursorPage[User])


def check_fakes(fake: FakeUsers) -> None:
    assert_type(fake.get(KEY), User)
    assert_type(fake.list(), list[User])
    mirrored = InMemoryRepository.mirroring(Users)([User(id=KEY, email="e", name="n")])
    assert_type(mirrored.get(KEY), User)


async def check_async_fakes(fake: AsyncFakeUsers) -> None:
    assert_type(await fake.get(KEY), User)


def test_a_repository_of_users_reads_users(sql_session: Session) -> None:
    users = Users(sql_session)
    users.add(User(id=KEY, email="e", name="n"))
    check_sync(users)  # the calls type-checked above run without error
    assert service(users) == [users.get(KEY)]


def test_an_in_memory_repository_of_users_reads_users() -> None:
    fake = FakeUsers([User(id=KEY, email="e", name="n")])
    check_fakes(fake)
    assert [u.id for u in service(fake)] == [KEY]


def test_the_model_comes_from_the_generic_parameter() -> None:
    assert Users.model is User
    assert AsyncUsers.model is User
    assert FakeUsers.model is User
    assert AsyncFakeUsers.model is User
    assert InMemoryRepository.mirroring(Users).model is User
