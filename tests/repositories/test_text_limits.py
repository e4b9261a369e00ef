"""Text too long for its column, or holding a NUL, is refused by every write path on every
backend, as PostgreSQL refuses it: ``add``, ``add_many`` and ``bulk_insert`` stored it on SQLite
and in memory (only ``update`` and ``upsert`` checked), and ``bulk_update`` stored it on
SQLite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from dalkit import BulkLoadError, InMemoryRepository, InvalidQueryError, Repository

from .models import User


class Users(Repository[User]):
    pass


def _user(**values: Any) -> dict[str, Any]:
    return {"id": 2, "email": "b@example.com", "name": "b", **values}


WRITES: dict[str, tuple[Callable[[Any, Any], Any], type[Exception]]] = {
    "add": (lambda r, v: r.add(User(**_user(name=v))), InvalidQueryError),
    "add_many": (lambda r, v: r.add_many([User(**_user(name=v))]), InvalidQueryError),
    "bulk_insert": (lambda r, v: r.bulk_insert([_user(name=v)]), BulkLoadError),
    "bulk_update": (lambda r, v: r.bulk_update([{"id": 1, "name": v}]), BulkLoadError),
    "update": (lambda r, v: r.update(1, name=v), InvalidQueryError),
}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("text", ["x" * 101, "a\x00b"], ids=["too-long", "nul"])
def test_text_postgresql_refuses_is_refused_by_every_write_and_backend(
    session: Session | None, write: str, text: str
) -> None:
    first = User(id=1, email="a@example.com", name="a")
    if session is None:
        users: Any = InMemoryRepository.mirroring(Users)([first])
    else:
        users = Users(session)
        users.add(first)
    call, error = WRITES[write]
    with pytest.raises(error):
        call(users, text)
    if session is not None:
        session.rollback()
    else:
        assert [u.name for u in users.list()] == ["a"]
