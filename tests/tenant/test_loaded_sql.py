"""The SQL the ORM adds to a select when it compiles it: a ``column_property`` (or a
``query_expression`` default) reading a tenant-scoped ``Table`` or naming one in SQL text,
and any ``with_expression()`` reading a tenant-scoped table (the criteria do not reach its
subqueries, even a model's), are refused inside a tenant rather than reading every tenant's
rows; a ``column_property`` whose subquery reads a model counts the tenant's rows only, and a
``with_expression()`` of the row's own columns runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    aliased,
    column_property,
    joinedload,
    mapped_column,
    query_expression,
    relationship,
    with_expression,
)

from dalkit import AsyncDatabase, Database
from dalkit.query.tenant import TenantScoped, UnscopedStatementError, every_tenant, tenant


class Base(DeclarativeBase):
    pass


class Entry(TenantScoped, Base):
    __tablename__ = "loaded_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(sa.ForeignKey("loaded_books.id"))
    extra: Mapped[int | None] = query_expression()


ENTRIES = Entry.__table__
EVERY_COUNT = sa.select(sa.func.count()).select_from(ENTRIES).scalar_subquery()


class Book(TenantScoped, Base):
    """Its own entries are counted by a model subquery, which the criteria reach."""

    __tablename__ = "loaded_books"

    id: Mapped[int] = mapped_column(primary_key=True)
    entries: Mapped[list[Entry]] = relationship(order_by=Entry.id)
    own: Mapped[int] = column_property(
        sa.select(sa.func.count(Entry.id)).where(Entry.book_id == id).scalar_subquery()
    )
    doubled: Mapped[int] = column_property(id * 2)
    ledgers: Mapped[list[Ledger]] = relationship(viewonly=True)


class Ledger(TenantScoped, Base):
    """Counts every tenant's entries through the Table: no criteria reach it."""

    __tablename__ = "loaded_ledgers"

    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(sa.ForeignKey("loaded_books.id"))
    book: Mapped[Book] = relationship()
    total: Mapped[int] = column_property(EVERY_COUNT)


class Tally(TenantScoped, Base):
    __tablename__ = "loaded_tallies"

    id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int | None] = query_expression(
        sa.literal_column("(SELECT count(*) FROM loaded_entries)")
    )


class Page(TenantScoped, Base):
    """Loads its ledger in its own select."""

    __tablename__ = "loaded_pages"

    id: Mapped[int] = mapped_column(primary_key=True)
    ledger_id: Mapped[int] = mapped_column(sa.ForeignKey("loaded_ledgers.id"))
    ledger: Mapped[Ledger] = relationship(lazy="joined")


Statement = Callable[[], Any]
REFUSAL = r"'loaded_\w+' inside tenant 'a'"
REFUSED: dict[str, Statement] = {
    "with_expression() of a Table subquery": lambda: sa.select(Entry).options(
        with_expression(Entry.extra, EVERY_COUNT)
    ),
    "with_expression() of a model subquery": lambda: sa.select(Entry).options(
        with_expression(Entry.extra, sa.select(sa.func.count(Entry.id)).scalar_subquery())
    ),
    "with_expression() of SQL text": lambda: sa.select(Entry).options(
        with_expression(Entry.extra, sa.literal_column("(SELECT count(*) FROM loaded_entries)"))
    ),
    "a column_property of a Table subquery": lambda: sa.select(Ledger),
    "the same through an alias": lambda: sa.select(aliased(Ledger)),
    "the same through a joined eager load option": lambda: sa.select(Book).options(
        joinedload(Book.ledgers)
    ),
    "the same through a joined eager relationship": lambda: sa.select(Page),
    "a query_expression default of SQL text": lambda: sa.select(Tally),
}


def _seed(session: sa.orm.Session) -> None:
    session.add_all([Book(id=1, tenant_id="a"), Book(id=2, tenant_id="b")])
    session.flush()
    session.add_all([Entry(id=i, book_id=1 if i == 1 else 2, tenant_id="b") for i in (1, 2, 3)])
    session.add(Entry(id=4, book_id=1, tenant_id="a"))
    session.add(Ledger(id=1, book_id=1, tenant_id="a"))
    session.flush()
    session.add_all([Tally(id=1, tenant_id="a"), Page(id=1, ledger_id=1, tenant_id="a")])


@pytest.fixture
def seeded(db: Database) -> Database:
    db.create_all(Base.metadata)
    with every_tenant(), db.transaction() as session:
        _seed(session)
    return db


@pytest.mark.parametrize("statement", REFUSED.values(), ids=REFUSED)
def test_sql_the_orm_adds_that_reads_a_tenant_scoped_table_unscoped_is_refused(
    seeded: Database, statement: Statement
) -> None:
    with tenant("a"), pytest.raises(UnscopedStatementError, match=REFUSAL):
        with seeded.session() as session:
            session.execute(statement()).all()


def test_a_column_property_of_a_model_subquery_counts_the_tenants_rows(seeded: Database) -> None:
    with tenant("a"), seeded.session() as session:
        book = session.execute(sa.select(Book)).scalar_one()
        assert (book.id, book.own, book.doubled) == (1, 1, 2)
        assert session.execute(sa.select(Book.own, Book.doubled)).one() == (1, 2)
        other = session.execute(sa.select(aliased(Book))).scalar_one()
        assert (other.own, other.doubled) == (1, 2)
        own = with_expression(Entry.extra, Entry.id * 10)
        entries = session.execute(sa.select(Entry).options(own)).scalars().all()
        assert [(e.id, e.extra) for e in entries] == [(4, 40)]


async def test_an_async_session_refuses_a_with_expression_subquery(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)
    with every_tenant():
        async with async_db.transaction() as session:
            await session.run_sync(_seed)
    with tenant("a"):
        async with async_db.session() as session:
            with pytest.raises(UnscopedStatementError, match=REFUSAL):
                await session.execute(REFUSED["with_expression() of a model subquery"]())
            with pytest.raises(UnscopedStatementError, match=REFUSAL):
                await session.execute(sa.select(Ledger))
