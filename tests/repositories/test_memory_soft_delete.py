"""The in-memory repository refuses a write that meets a soft-deleted row as the SQL
repositories do (``SoftDeletedRowError``: ``bulk_update``, ``upsert``, ``upsert_many``), where it
changed the deleted row silently, and the reads after them agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from dalkit import InMemoryRepository, Repository
from dalkit.errors import DalkitError
from dalkit.query.soft_delete import SoftDeletedRowError

from .models import Post, User


class Posts(Repository[Post]):
    pass


def _shown(value: Any) -> Any:
    if isinstance(value, Post):
        return (value.id, value.title, value.deleted_at is not None)
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


STEPS: list[Callable[[Any], Any]] = [
    lambda r: r.delete(1),
    lambda r: r.bulk_update([{"id": 2, "title": "kept"}, {"id": 1, "title": "changed"}]),
    lambda r: r.upsert({"id": 1, "author_id": 1, "title": "upserted"}, on=["id"]),
    lambda r: r.upsert({"id": 1, "author_id": 1, "title": "x"}, on=["id"], update=[]),
    lambda r: r.upsert_many([{"id": 1, "author_id": 1, "title": "many"}], on=["id"]),
    lambda r: r.list(sort="id", include_deleted=True),
    lambda r: r.restore(1),
    lambda r: r.upsert({"id": 1, "author_id": 1, "title": "restored"}, on=["id"]),
    lambda r: r.bulk_update([{"id": 1, "title": "bulk"}]),
    lambda r: r.list(sort="id"),
]


def _run(repository: Any) -> list[Any]:
    answers = []
    for step in STEPS:
        try:
            answers.append(_shown(step(repository)))
        except DalkitError as error:
            answers.append(type(error).__name__)
    return answers


def _posts() -> list[Post]:
    return [Post(id=1, author_id=1, title="one"), Post(id=2, author_id=1, title="two")]


def test_writes_meeting_a_soft_deleted_row_are_refused_in_memory_as_in_sql(
    sql_session: Session,
) -> None:
    sql_session.add(User(id=1, email="ada@example.com", name="Ada"))
    posts = Posts(sql_session)
    posts.add_many(_posts())
    expected = _run(InMemoryRepository.mirroring(Posts)(_posts()))
    assert _run(posts) == expected
    assert expected[1:5] == ["SoftDeletedRowError"] * 4
    assert expected[5] == [(1, "one", True), (2, "two", False)]  # bulk_update: all or nothing
    assert expected[-1] == [(1, "bulk", False), (2, "two", False)]


def test_an_in_memory_bulk_update_of_a_deleted_row_raises_before_anything_changes() -> None:
    posts = InMemoryRepository.mirroring(Posts)(_posts())
    posts.delete(2)
    with pytest.raises(SoftDeletedRowError):
        posts.bulk_update([{"id": 1, "title": "changed"}, {"id": 2, "title": "changed"}])
    assert [p.title for p in posts.list(include_deleted=True, sort="id")] == ["one", "two"]
