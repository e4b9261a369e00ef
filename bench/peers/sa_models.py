"""The declarative models of the two tables, shared by the SQLAlchemy-based peers (dalkit,
SQLAlchemy ORM and Core, advanced-alchemy): users of each would write exactly these."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.peers.base import BULK_TABLE, TABLE


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    email: Mapped[str] = mapped_column(sa.String(100))
    category: Mapped[int]
    score: Mapped[int]
    created_at: Mapped[dt.datetime]


class BulkItem(Base):
    __tablename__ = BULK_TABLE

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    email: Mapped[str] = mapped_column(sa.String(100))
    category: Mapped[int]
    score: Mapped[int]
    created_at: Mapped[dt.datetime]


def page_statement(category: int) -> sa.Select[Any]:
    """The page every SQLAlchemy peer reads: one category, newest first, the key breaking ties."""
    return (
        sa.select(Item)
        .where(Item.category == category)
        .order_by(Item.created_at.desc(), Item.id)
        .limit(20)
    )
