"""Values to write (upsert) are checked and coerced as filter values are, with an error naming
the field."""

from __future__ import annotations

import decimal
import math

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import InvalidQueryError, QueryInputError
from dalkit.query.fields import column_field, model_info
from dalkit.query.inputs import coerce_values, write_value

from .models import Account, Reading

INFO = model_info(Account)


def test_text_that_is_not_an_integer_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidQueryError) as caught:
        coerce_values(INFO, {"email": "a@x", "age": "thirty"})
    assert isinstance(caught.value, QueryInputError)
    assert caught.value.name == "age"
    assert "age" in str(caught.value)


def test_values_are_coerced_to_the_column_types() -> None:
    values = coerce_values(INFO, {"id": "7", "age": " 30 ", "email": "a@x", "nickname": None})
    assert values == {"id": 7, "age": 30, "email": "a@x", "nickname": None}


@pytest.mark.parametrize(
    "values",
    [
        {"age": 2**40},
        {"age": True},
        {"email": "x" * 101},
        {"email": "a\x00b"},
        {"unknown": 1},
        {"age": decimal.Decimal("1.5")},
    ],
)
def test_values_a_column_cannot_hold_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(InvalidQueryError):
        coerce_values(INFO, values)


def test_infinite_floats_may_be_written(session: Session) -> None:
    values = coerce_values(model_info(Reading), {"id": 1, "value": math.inf})
    session.execute(sa.insert(Reading).values(**values))
    assert session.scalar(sa.select(Reading.value)) == math.inf


def test_coerced_values_store_what_the_column_holds(session: Session) -> None:
    values = coerce_values(INFO, {"id": "1", "email": "a@x", "password_hash": "h", "age": "41"})
    session.execute(sa.insert(Account).values(**values))
    assert session.scalar(sa.select(Account.age).where(Account.id == 1)) == 41


def test_a_binary_column_takes_bytes_only() -> None:
    # text reached psycopg, which raised a raw TypeError, and the in-memory repository kept it
    field = column_field(sa.Column("blob", sa.LargeBinary))
    assert write_value(field, bytearray(b"x")) == b"x"
    with pytest.raises(InvalidQueryError, match="blob: expected bytes, got str"):
        write_value(field, "text")
