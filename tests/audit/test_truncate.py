"""Raw ``TRUNCATE`` and the audit (PostgreSQL; SQLite has none): ``TRUNCATE ... CASCADE`` of a
table that an audited table references by a foreign key, with no ``ON DELETE`` action or
through a table between, empties the audited table too, and a table listed after ``ONLY`` is
truncated like the first: each is refused with UnauditedWriteError, nothing emptied."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, Audited, Database
from dalkit.audit import UnauditedWriteError

pytestmark = pytest.mark.postgres


class Base(DeclarativeBase):
    pass


class Region(Base):
    __tablename__ = "audit_trunc_regions"

    id: Mapped[int] = mapped_column(primary_key=True)


class Shop(Base):
    __tablename__ = "audit_trunc_shops"

    id: Mapped[int] = mapped_column(primary_key=True)
    region_id: Mapped[int] = mapped_column(sa.ForeignKey(Region.id))


class Item(Audited, Base):
    __tablename__ = "audit_trunc_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey(Shop.id))  # no ON DELETE action


class Note(Base):
    __tablename__ = "audit_trunc_notes"

    id: Mapped[int] = mapped_column(primary_key=True)


SEED = (
    "INSERT INTO audit_trunc_regions VALUES (1)",
    "INSERT INTO audit_trunc_shops VALUES (1, 1)",
    "INSERT INTO audit_trunc_notes VALUES (1)",
)
REFUSED = [
    "TRUNCATE audit_trunc_shops CASCADE",
    "truncate table audit_trunc_regions restart identity cascade",  # two tables up
    "TRUNCATE audit_trunc_notes, ONLY audit_trunc_items",
]


@pytest.fixture
def db_pg(db: Database, db_backend: str) -> Database:
    if db_backend != "postgres":
        pytest.skip("SQLite has no TRUNCATE")
    db.create_all(Base.metadata)
    for sql in SEED:
        db.sql(sql)
    with db.transaction() as session:
        session.add(Item(id=1, shop_id=1))
    return db


@pytest.mark.parametrize("sql", REFUSED)
def test_a_truncate_reaching_an_audited_table_is_refused(db_pg: Database, sql: str) -> None:
    with pytest.raises(UnauditedWriteError, match="audit_trunc"):
        db_pg.sql(sql)
    with db_pg.transaction() as session, pytest.raises(UnauditedWriteError):
        session.execute(sa.text(sql))
    with db_pg.transaction(read_only=True) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Item)) == 1


def test_a_truncate_of_tables_no_audited_table_references_runs(db_pg: Database) -> None:
    db_pg.sql("TRUNCATE audit_trunc_notes CASCADE")
    with db_pg.transaction(read_only=True) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0


@pytest.mark.parametrize("sql", REFUSED)
async def test_an_async_truncate_reaching_an_audited_table_is_refused(
    db_pg: Database, async_db: AsyncDatabase, sql: str
) -> None:
    async with async_db.transaction() as session:
        with pytest.raises(UnauditedWriteError):
            await session.execute(sa.text(sql))
    with db_pg.transaction(read_only=True) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Item)) == 1
