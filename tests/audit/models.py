"""Models of the audit-path tests, on their own metadata: authors with comments (audited,
delete-orphan) and posts (audited and soft-deletable, delete-orphan), gadgets (audited,
soft-deletable, a unique sku for upserts), tags (soft-deletable only) and counters (audited, for
statements over many rows)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import Audited, SoftDeleteMixin


class Base(DeclarativeBase):
    pass


class Author(Audited, Base):
    __tablename__ = "audit_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    comments: Mapped[list[Comment]] = relationship(
        back_populates="author", cascade="all, delete-orphan", order_by="Comment.id"
    )
    posts: Mapped[list[Post]] = relationship(
        back_populates="author", cascade="all, delete-orphan", order_by="Post.id"
    )


class Comment(Audited, Base):
    __tablename__ = "audit_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("audit_authors.id"))
    body: Mapped[str] = mapped_column(sa.String(200))
    author: Mapped[Author] = relationship(back_populates="comments")


class Post(Audited, SoftDeleteMixin, Base):
    __tablename__ = "audit_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("audit_authors.id"))
    title: Mapped[str] = mapped_column(sa.String(200))
    author: Mapped[Author] = relationship(back_populates="posts")


class Gadget(Audited, SoftDeleteMixin, Base):
    __tablename__ = "audit_gadgets"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(sa.String(40), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))


class Tag(SoftDeleteMixin, Base):
    """Soft-deletable, not audited."""

    __tablename__ = "audit_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(40), unique=True)


class Counter(Audited, Base):
    __tablename__ = "audit_counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(default=0)


class Scratch(Base):
    """Neither audited nor soft-deletable: raw SQL may write it."""

    __tablename__ = "audit_scratch"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(40), default="")


def table(model: type[Base]) -> sa.Table:
    """The Table of a model of this module, typed as one."""
    found = model.__table__
    assert isinstance(found, sa.Table)
    return found
