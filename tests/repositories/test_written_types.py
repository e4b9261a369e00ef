"""add(), add_many() and bulk_insert() check and coerce a value of another type than its
column's as update() and upsert() do, on SQLite, PostgreSQL and in memory alike: the drivers
disagreed (an INTEGER given 1.5 stored 1.5 on SQLite, 2 through psycopg, 1 through asyncpg) and
the in-memory repository stored whatever it was given (a DateTime's text, sorted as text)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from dalkit import BulkLoadError, InMemoryRepository, InvalidQueryError, Repository

from .models import EPOCH, Status, User


class Users(Repository[User]):
    pass


def _users(session: Session | None) -> Any:
    return Users(session) if session is not None else InMemoryRepository.mirroring(Users)()


GIVEN_OTHERWISE = {
    "age": "30",
    "status": "banned",
    "created_at": "2024-01-01T12:00:00",
    "balance": "1.50",
    "is_active": 0,
    "score": " 7 ",
}
STORED = {
    "age": 30,
    "status": Status.banned,
    "created_at": EPOCH,
    "balance": Decimal("1.50"),
    "is_active": False,
    "score": 7,
}


def test_add_and_bulk_insert_coerce_as_update_does(session: Session | None) -> None:
    users = _users(session)
    added = users.add(User(email="a@example.com", name="a", **GIVEN_OTHERWISE))
    assert users.bulk_insert([{"email": "b@example.com", "name": "b", **GIVEN_OTHERWISE}]) == 1
    if session is not None:
        session.expire_all()
    for user in users.list(sort="email"):
        assert {name: getattr(user, name) for name in STORED} == STORED
    assert users.count(created_at__lt=EPOCH + dt.timedelta(seconds=1)) == 2
    assert added.id is not None


VALID = {"age": 1, "status": Status.active, "created_at": EPOCH, "balance": Decimal(1), "name": "d"}


@pytest.mark.parametrize(
    "value",
    [
        {"age": 1.5},
        {"age": True},
        {"status": "unknown"},
        {"created_at": 5},
        {"created_at": dt.date(2024, 1, 1)},
        {"balance": Decimal("1.005")},
        {"name": b"bytes"},
    ],
    ids=repr,
)
def test_a_value_its_column_cannot_take_is_refused_on_every_path(
    session: Session | None, value: dict[str, Any]
) -> None:
    users = _users(session)
    with pytest.raises(InvalidQueryError, match=next(iter(value))):
        users.add(User(**{"email": "a@example.com", "name": "a", **value}))
    with pytest.raises(InvalidQueryError):
        users.add_many(
            [User(email="b@x", name="b"), User(**{"email": "c@x", "name": "c", **value})]
        )
    rows = [
        {"email": "d@example.com", "name": "d", **{name: VALID[name] for name in value}},
        {"email": "e@example.com", "name": "e", **value},
    ]
    with pytest.raises(BulkLoadError, match="row 1"):
        users.bulk_insert(rows)
    assert users.count() == 0
