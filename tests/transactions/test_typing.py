"""run_transaction and @transactional are typed with ParamSpec: mypy (run over the tests) checks
the arguments against the function's own signature and sees the session parameter dropped.
The assertions also run, so a broken call shape fails at runtime too."""

from __future__ import annotations

from typing import assert_type

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database


def test_run_transaction_checks_the_function_arguments_and_returns_its_type(
    db: Database,
) -> None:
    def double(session: Session, value: int, *, label: str = "") -> str:
        return f"{label}{value * 2}"

    assert assert_type(db.run_transaction(double, 21), str) == "42"
    assert assert_type(db.run_transaction(double, 1, label="x"), str) == "x2"
    # a keyword argument named like an option belongs to the function, never to dalkit
    with pytest.raises(TypeError):
        db.run_transaction(double, 1, retry=3)  # type: ignore[call-arg]


def test_transactional_drops_the_session_parameter_from_what_callers_see(db: Database) -> None:
    @db.transactional(read_only=True)
    def name_of(session: Session, item_id: int) -> str:
        return str(item_id)

    assert assert_type(name_of(7), str) == "7"

    def upper(session: Session, text: str) -> str:
        return text.upper()

    assert assert_type(db.transactional(retry=None).run(upper, "a"), str) == "A"


async def test_the_async_forms_are_typed_the_same_way(async_db: AsyncDatabase) -> None:
    async def triple(session: AsyncSession, value: int) -> int:
        return value * 3

    assert assert_type(await async_db.run_transaction(triple, 3), int) == 9
    assert assert_type(await async_db.transactional(isolation=None).run(triple, 2), int) == 6
