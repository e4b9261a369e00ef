"""Over-long filter and search text is refused up front with a typed 400-style error, before a
database meets it; a mapping or set where an ordered list is expected is refused too."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncInMemoryRepository,
    AsyncRepository,
    InMemoryRepository,
    InvalidFilterError,
    QueryInputError,
    Repository,
)
from dalkit.query.errors import InputTooLongError
from dalkit.query.fields import model_info
from dalkit.query.specs import MAX_INPUT_LENGTH, FilterParser, search_group

from .models import Emp

HUGE_PATTERN = "%a" * 30_000  # 60,000 characters: SQLite answers "pattern too complex"


class Emps(Repository[Emp]):
    pass


class AsyncEmps(AsyncRepository[Emp]):
    pass


def _seed(session: Session) -> Emps:
    repo = Emps(session)
    repo.add_many([Emp(id=i, email=f"e{i}@example.com", age=20 + i) for i in range(1, 4)])
    return repo


def test_a_60000_character_like_pattern_is_refused_before_the_database(session: Session) -> None:
    repo = _seed(session)
    for call in (
        lambda: repo.find(email__like=HUGE_PATTERN),
        lambda: repo.find(email__ilike=HUGE_PATTERN),
        lambda: repo.find(email__contains="a" * 60_000),
        lambda: repo.find(email__in=["a" * 60_000]),
        lambda: repo.search("a" * 60_000),
        lambda: repo.count(email="a" * 60_000),
    ):
        with pytest.raises(InputTooLongError) as caught:
            call()
        assert isinstance(caught.value, QueryInputError)
        assert str(MAX_INPUT_LENGTH) in str(caught.value)


def test_text_at_the_cap_still_runs(session: Session) -> None:
    repo = _seed(session)
    assert repo.search("e" * MAX_INPUT_LENGTH) == []
    assert [e.id for e in repo.find(email__like="%" * MAX_INPUT_LENGTH)] == [1, 2, 3]


async def test_the_async_repository_refuses_over_long_text(async_session: AsyncSession) -> None:
    repo = AsyncEmps(async_session)
    with pytest.raises(InputTooLongError):
        await repo.find(email__like=HUGE_PATTERN)
    with pytest.raises(InputTooLongError):
        await repo.search("a" * 60_000)


def test_the_in_memory_repository_refuses_over_long_text() -> None:
    repo = InMemoryRepository.mirroring(Emps)([Emp(id=1, email="a@x", age=1)])
    with pytest.raises(InputTooLongError):
        repo.find(email__like=HUGE_PATTERN)
    with pytest.raises(InputTooLongError):
        repo.search("a" * 60_000)


async def test_the_async_in_memory_repository_refuses_over_long_text() -> None:
    repo = AsyncInMemoryRepository.mirroring(AsyncEmps)([Emp(id=1, email="a@x", age=1)])
    with pytest.raises(InputTooLongError):
        await repo.find(email__like=HUGE_PATTERN)


def test_the_cap_is_configurable() -> None:
    info = model_info(Emp)
    generous = FilterParser(info, ["email"], max_input_length=5_000)
    assert generous.condition("email__like", "%a" * 2_000).op == "like"
    strict = FilterParser(info, ["email"], max_input_length=10)
    with pytest.raises(InputTooLongError):
        strict.condition("email", "a" * 11)
    with pytest.raises(InputTooLongError):
        search_group([info.fields["email"]], "a" * 11, max_length=10)
    assert len(search_group([info.fields["email"]], "a" * 10, max_length=10).children) == 1


@pytest.mark.parametrize(
    "filters",
    [
        {"age__between": {"0": "x", "20": "y"}},
        {"age__between": {"20": 1, "30": 2}},
        {"age__in": {"20": "a", "21": "b"}},
        {"age__not_in": {"20": None}},
        {"age__between": {20, 30}},
    ],
    ids=["between-str-keys", "between-int-like-keys", "in", "not_in", "between-set"],
)
def test_a_mapping_or_set_where_a_list_is_expected_is_refused(
    session: Session, filters: dict[str, object]
) -> None:
    repo = _seed(session)
    with pytest.raises(InvalidFilterError, match="list"):
        repo.find(**filters)
    memory = InMemoryRepository.mirroring(Emps)([])
    with pytest.raises(InvalidFilterError, match="list"):
        memory.find(**filters)


async def test_the_async_repository_refuses_a_mapping_where_a_list_is_expected(
    async_session: AsyncSession,
) -> None:
    repo = AsyncEmps(async_session)
    with pytest.raises(InvalidFilterError, match="list"):
        await repo.find(age__between={"0": "x", "20": "y"})
    memory = AsyncInMemoryRepository.mirroring(AsyncEmps)([])
    with pytest.raises(InvalidFilterError, match="list"):
        await memory.find(age__between={"0": "x", "20": "y"})


def test_a_list_still_works_for_between_and_in(session: Session) -> None:
    repo = _seed(session)
    assert [e.id for e in repo.find(age__between=["21", 22])] == [1, 2]
    assert [e.id for e in repo.find(age__in=(21, 23))] == [1, 3]
