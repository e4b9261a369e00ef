"""Tables the transaction tests share, and helpers to create them through either API."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, Database


class Base(DeclarativeBase):
    pass


class Item(Base):
    """Rows a test writes to see whether its transaction committed."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)


class Counter(Base):
    """A counter with an ORM version column: a stale read-modify-write raises StaleDataError."""

    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


def create_all(db: Database) -> None:
    with db.engine.begin() as connection:
        Base.metadata.create_all(connection)


async def create_all_async(db: AsyncDatabase) -> None:
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)


def item_names(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(sa.select(Item.name).order_by(Item.name)))


async def item_names_async(db: AsyncDatabase) -> list[str]:
    async with db.session() as session:
        return list((await session.scalars(sa.select(Item.name).order_by(Item.name))).all())
