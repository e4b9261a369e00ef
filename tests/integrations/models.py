"""Tables the middleware tests write to: notes with a unique value, and items whose owner is
checked only at COMMIT (a deferred foreign key, on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Audited


class Base(DeclarativeBase):
    pass


class Note(Audited, Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(80), unique=True)


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True)


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("owners.id", deferrable=True, initially="DEFERRED")
    )
