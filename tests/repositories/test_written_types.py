"""add(), add_many() and bulk_insert() check and coerce a value of another type than its
column's as update() and upsert() do, on SQLite, PostgreSQL and in memory alike: the drivers
disagreed (an INTEGER given 1.5 stored 1.5 on SQLite, 2 through psycopg, 1 through asyncpg) and
the in-memory repository stored whatever it was given (a DateTime's text, sorted as text)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dalkit import BulkLoadError, DatabaseError, InMemoryRepository, InvalidQueryError, Repository

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
        {"balance": Decimal("12345678901.5")},  # a NUMERIC(12, 2) overflows
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


class _Base(DeclarativeBase):
    pass


class Document(_Base):
    __tablename__ = "written_documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric(10, 2), nullable=True)


class Documents(Repository[Document]):
    pass


def _documents(session: Session | None) -> Any:
    if session is None:
        return InMemoryRepository.mirroring(Documents)()
    _Base.metadata.create_all(session.connection())
    return Documents(session)


def test_a_number_for_a_numeric_column_reads_back_at_its_scale(session: Session | None) -> None:
    # the in-memory repository kept an int or a float as given: 3, where the databases give
    # back Decimal("3.00") (Decimal equality would not tell the two apart: str does)
    documents = _documents(session)
    added = [documents.add(Document(price=price)) for price in (3, 0.1, Decimal("2.5"))]
    assert documents.bulk_insert([{"price": 7}, {"price": 0.25}]) == 2
    if session is not None:
        session.expire_all()
    assert [str(d.price) for d in documents.list(sort="id")] == [
        "3.00", "0.10", "2.50", "7.00", "0.25"
    ]  # fmt: skip
    documents.update(added[0], price=4)
    if session is not None:
        session.expire_all()
    assert str(documents.get(added[0].id).price) == "4.00"


def test_a_json_value_json_cannot_hold_is_refused_as_the_databases_refuse_it(
    session: Session | None,
) -> None:
    # the in-memory repository stored a set, which every driver's JSON serializer refuses
    documents = _documents(session)
    with pytest.raises(DatabaseError, match="set is not JSON serializable"):
        documents.add(Document(body={1, 2}))
    if session is not None:
        session.rollback()
        documents = _documents(session)
    with pytest.raises(BulkLoadError, match="row 1"):
        documents.bulk_insert([{"body": [1]}, {"body": {1, 2}}])
    assert documents.count() == 0
