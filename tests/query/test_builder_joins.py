"""QueryBuilder aliases a table that is already in the FROM clause (a self-referential or a
second join), so ``manager.email`` means the manager's row, not the employee's."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import InvalidQueryError
from dalkit.query.builder import QueryBuilder

from .models import Emp


def _staff() -> list[Emp]:
    return [
        Emp(id=1, email="boss@x", age=60),
        Emp(id=2, email="mid@x", age=40, manager_id=1),
        Emp(id=3, email="dev@x", age=30, manager_id=2),
        Emp(id=4, email="ops@x", age=35, manager_id=2),
    ]


MANAGERS = (
    QueryBuilder(Emp)
    .join("manager")
    .select("email", "manager.email")
    .where("manager.email", "=", "mid@x")
    .order_by("email")
)
REPORT_COUNTS = (
    QueryBuilder(Emp)
    .left_join("reports")
    .select("email", "count(reports.id)")
    .group_by("email")
    .order_by("email")
)


def test_a_self_referential_join_is_aliased() -> None:
    sql = MANAGERS.to_sql("postgresql")
    assert "JOIN q_emps AS manager ON manager.id = q_emps.manager_id" in sql
    assert "WHERE manager.email = " in sql
    assert "q_emps.email AS email, manager.email AS manager_email" in sql


def test_the_joined_alias_answers_on_the_database(session: Session) -> None:
    session.add_all(_staff())
    session.flush()
    rows = session.execute(MANAGERS.build()).all()
    assert [tuple(r) for r in rows] == [("dev@x", "mid@x"), ("ops@x", "mid@x")]
    counts = session.execute(REPORT_COUNTS.build()).all()
    assert [tuple(r) for r in counts] == [("boss@x", 1), ("dev@x", 0), ("mid@x", 2), ("ops@x", 0)]


async def test_the_joined_alias_answers_on_the_async_database(async_session: AsyncSession) -> None:
    async_session.add_all(_staff())
    await async_session.flush()
    rows = (await async_session.execute(MANAGERS.build())).all()
    assert [tuple(r) for r in rows] == [("dev@x", "mid@x"), ("ops@x", "mid@x")]


def test_both_directions_can_be_joined_together(session: Session) -> None:
    session.add_all(_staff())
    session.flush()
    both = (
        QueryBuilder(Emp)
        .join("manager")
        .join("reports")
        .select("email", "manager.email", "reports.email")
        .order_by("reports.email")
    )
    rows = session.execute(both.build()).all()
    assert [tuple(r) for r in rows] == [("mid@x", "boss@x", "dev@x"), ("mid@x", "boss@x", "ops@x")]


def test_a_join_name_cannot_be_joined_twice() -> None:
    with pytest.raises(InvalidQueryError, match="joined already"):
        QueryBuilder(Emp).join("manager").join("manager")
