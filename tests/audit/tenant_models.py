"""Models of the audit trail's tenant tests: tenant-scoped audited documents, and audited notes
that belong to no tenant, on their own metadata."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Audited
from dalkit.query.tenant import TenantScoped


class Base(DeclarativeBase):
    pass


class Document(Audited, TenantScoped, Base):
    __tablename__ = "audit_tenant_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(100))


class Memo(Audited, Base):
    __tablename__ = "audit_tenant_memos"

    id: Mapped[int] = mapped_column(primary_key=True)
