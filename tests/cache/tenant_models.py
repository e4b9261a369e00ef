"""A tenant-scoped model of the cache tests: items of a tenant, in a schema of their own."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit.query.tenant import TenantScoped


class Base(DeclarativeBase):
    pass


class Item(TenantScoped, Base):
    __tablename__ = "cache_tenant_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(100))


def items_table() -> sa.Table:
    """The Table of `Item`, typed as one."""
    found = Item.__table__
    assert isinstance(found, sa.Table)
    return found
