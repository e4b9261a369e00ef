"""Models of the tenant tests: shops and their items (tenant-scoped), with a code unique across
tenants for upserts, and notes that belong to no tenant."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit.query.tenant import TenantScoped


class Base(DeclarativeBase):
    pass


class Shop(TenantScoped, Base):
    __tablename__ = "tenant_shops"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(20), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    items: Mapped[list[Item]] = relationship(back_populates="shop", order_by="Item.id")


class Item(TenantScoped, Base):
    __tablename__ = "tenant_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("tenant_shops.id"))
    label: Mapped[str] = mapped_column(sa.String(100))
    shop: Mapped[Shop] = relationship(back_populates="items")


class Note(Base):
    """Belongs to no tenant: read and written anywhere."""

    __tablename__ = "tenant_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(100))


def table(model: type[Base]) -> sa.Table:
    """The Table of a model of this module, typed as one."""
    found = model.__table__
    assert isinstance(found, sa.Table)
    return found
