"""Soft delete: a ``deleted_at`` column, and the loader criteria that hide deleted rows from every
read of a repository, relationship loads included."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, with_loader_criteria
from sqlalchemy.orm.util import LoaderCriteriaOption

__all__ = ["SoftDeleteMixin", "hide_deleted", "is_soft_deletable", "utcnow"]


class SoftDeleteMixin:
    """Mix into a declarative model to give it ``deleted_at``; its repositories then delete by
    setting it, hide such rows from every read, and offer ``restore()`` and ``include_deleted``.

    Times are naive UTC, which compare the same way on SQLite and PostgreSQL.
    """

    deleted_at: Mapped[dt.datetime | None] = mapped_column(
        sa.DateTime(timezone=False), default=None, nullable=True, index=True
    )


def is_soft_deletable(model: type[Any]) -> bool:
    return isinstance(model, type) and issubclass(model, SoftDeleteMixin)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def hide_deleted() -> LoaderCriteriaOption:
    """A statement option hiding soft-deleted rows of every model that has the mixin, also in
    the relationship loads (lazy, selectin, joined) that the statement's objects trigger."""
    # the lambda is cached by SQLAlchemy by its code location: it must stay free of closures
    return with_loader_criteria(
        SoftDeleteMixin,
        lambda cls: cls.deleted_at.is_(None),
        include_aliases=True,
    )
