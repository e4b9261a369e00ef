"""A DELETE (or PostgreSQL's TRUNCATE ... CASCADE) of a table that belongs to no tenant, whose
foreign keys carry it into tenant-scoped rows (ON DELETE CASCADE / SET NULL, down a chain), or
an UPDATE of the key they follow by ON UPDATE CASCADE,
deletes or changes every tenant's rows: inside a tenant it is refused with
UnscopedStatementError by every path (a session's statement, a flush, raw SQL), outside any
tenant with TenantRequiredError, and it runs inside every_tenant()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dalkit import AsyncDatabase, Database
from dalkit.query.tenant import (
    TenantRequiredError,
    TenantScoped,
    UnscopedStatementError,
    every_tenant,
    tenant,
)


class Base(DeclarativeBase):
    pass


class Region(Base):
    __tablename__ = "tenant_casc_regions"

    id: Mapped[int] = mapped_column(primary_key=True)


class Plan(Base):
    __tablename__ = "tenant_casc_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    region_id: Mapped[int] = mapped_column(sa.ForeignKey(Region.id, ondelete="CASCADE"))


class Subscription(TenantScoped, Base):
    __tablename__ = "tenant_casc_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey(Plan.id, ondelete="SET NULL", onupdate="CASCADE")
    )


class Memo(Base):
    """Referenced by no tenant-scoped table: deleted anywhere."""

    __tablename__ = "tenant_casc_memos"

    id: Mapped[int] = mapped_column(primary_key=True)


def _seeded(db: Database) -> Database:
    db.create_all(Base.metadata)
    with every_tenant(), db.transaction() as session:
        session.add_all([Region(id=1), Memo(id=1)])
        session.flush()
        session.add(Plan(id=1, region_id=1))
    for name, key in (("a", 1), ("b", 2)):
        with tenant(name), db.transaction() as session:
            session.add(Subscription(id=key, plan_id=1))
    return db


def _b_plans(db: Database) -> list[int | None]:
    with tenant("b"), db.transaction(read_only=True) as session:
        return list(session.scalars(sa.select(Subscription.plan_id)))


def _flush_delete(session: Session) -> None:
    session.delete(session.get_one(Plan, 1))
    session.flush()


WRITES: list[Callable[[Session], Any]] = [
    lambda session: session.execute(sa.delete(Plan).where(Plan.id == 1)),
    lambda session: session.execute(sa.delete(Region)),  # two tables up
    lambda session: session.execute(sa.text("DELETE FROM tenant_casc_plans")),
    _flush_delete,
]


@pytest.mark.parametrize("write", WRITES, ids=["core", "chain", "raw", "flush"])
def test_a_delete_reaching_every_tenant_s_rows_is_refused_inside_a_tenant(
    database: Database, write: Callable[[Session], Any]
) -> None:
    db = _seeded(database)
    with tenant("a"), pytest.raises(UnscopedStatementError), db.transaction() as session:
        write(session)
    with pytest.raises(TenantRequiredError), db.transaction() as session:
        write(session)
    assert _b_plans(db) == [1]
    with every_tenant(), db.transaction() as session:
        write(session)
    assert _b_plans(db) == [None]


def test_a_delete_reaching_no_tenant_scoped_table_runs_inside_a_tenant(database: Database) -> None:
    db = _seeded(database)
    with tenant("a"), db.transaction() as session:
        session.execute(sa.delete(Memo))
        session.execute(sa.update(Plan).values(region_id=1))
    with tenant("a"):
        db.sql("DELETE FROM tenant_casc_memos")
        db.sql("UPDATE tenant_casc_plans SET region_id = (SELECT 1) WHERE id = 1")


def test_a_long_write_of_a_table_that_reaches_no_tenant_runs(database: Database) -> None:
    """A DELETE of 12,000 ids (the outbox relay marks up to 32,767 in one UPDATE) is more than
    the 10,000 tokens sqlparse reads: a statement that names no table reaching a tenant is not
    parsed at all (it failed with sqlparse's own SQLParseError before)."""
    db = _seeded(database)
    ids = list(range(12_000))
    with tenant("a"), db.transaction() as session:
        session.execute(sa.delete(Memo).where(Memo.id.in_(ids)))
    with every_tenant(), db.transaction(read_only=True) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Memo)) == 0


def _flush_rekey(session: Session) -> None:
    session.get_one(Plan, 1).id = 9
    session.flush()


@pytest.mark.parametrize(
    "write",
    [
        lambda session: session.execute(sa.update(Plan).values(id=9)),
        lambda session: session.execute(
            sa.text("UPDATE tenant_casc_plans SET ID = 9, region_id = 1")
        ),
        _flush_rekey,
    ],
    ids=["core", "raw", "flush"],
)
def test_a_change_of_a_key_every_tenant_s_rows_follow_is_refused_inside_a_tenant(
    database: Database, write: Callable[[Session], Any]
) -> None:
    db = _seeded(database)
    with tenant("a"), pytest.raises(UnscopedStatementError), db.transaction() as session:
        write(session)
    assert _b_plans(db) == [1]
    with every_tenant(), db.transaction() as session:
        write(session)
    assert _b_plans(db) == [9]


def test_a_truncate_cascade_reaching_every_tenant_s_rows_is_refused(
    database: Database, db_backend: str
) -> None:
    if db_backend != "postgres":
        pytest.skip("SQLite has no TRUNCATE")
    db = _seeded(database)
    with tenant("a"), pytest.raises(UnscopedStatementError, match="tenant_casc_subscriptions"):
        db.sql("TRUNCATE tenant_casc_memos, tenant_casc_regions CASCADE")
    assert _b_plans(db) == [1]


async def test_an_async_delete_reaching_every_tenant_s_rows_is_refused(
    database: Database, async_db: AsyncDatabase
) -> None:
    db = _seeded(database)
    async with async_db.transaction() as session:
        with tenant("a"), pytest.raises(UnscopedStatementError):
            await session.execute(sa.delete(Plan))
    assert _b_plans(db) == [1]
