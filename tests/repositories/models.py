"""Models for the repository tests: users with every kind of column, soft-deletable posts with
comments, plain tables for bulk loads and one with defaults that only SQLAlchemy produces."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import SoftDeleteMixin

EPOCH = dt.datetime(2024, 1, 1, 12, 0, 0)
LATER = dt.datetime(2030, 1, 1)


class Base(DeclarativeBase):
    pass


class Status(enum.Enum):
    active = "active"
    banned = "banned"
    pending = "pending"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    age: Mapped[int | None] = mapped_column(sa.Integer)
    score: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)
    status: Mapped[Status] = mapped_column(sa.Enum(Status), default=Status.active)
    balance: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2), default=Decimal("0"))
    created_at: Mapped[dt.datetime] = mapped_column(default=lambda: EPOCH)
    secret_note: Mapped[str | None] = mapped_column(sa.String(100))

    posts: Mapped[list[Post]] = relationship(back_populates="author", order_by="Post.id")

    def __repr__(self) -> str:
        return f"User(id={self.id}, email={self.email!r})"


class Post(SoftDeleteMixin, Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(sa.String(200))

    author: Mapped[User] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(back_populates="post", order_by="Comment.id")


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(sa.ForeignKey("posts.id"))
    body: Mapped[str] = mapped_column(sa.Text)

    post: Mapped[Post] = relationship(back_populates="comments")


class Reading(Base):
    """A wide-ish fact table for bulk loads and keyset walks."""

    __tablename__ = "readings"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    sensor: Mapped[str] = mapped_column(sa.String(40))
    value: Mapped[int] = mapped_column(sa.Integer, sa.CheckConstraint("value >= 0"))
    taken_at: Mapped[dt.datetime] = mapped_column(sa.DateTime)
    bucket: Mapped[int] = mapped_column(sa.Integer, index=True)


class Badge(Base):
    """A nullable unique column: NULLs never clash, in a constraint or an upsert's target."""

    __tablename__ = "badges"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str | None] = mapped_column(sa.String(20), unique=True)
    label: Mapped[str] = mapped_column(sa.String(40))


class Price(Base):
    """NUMERIC columns, with and without a scale, that add() and bulk loads give floats."""

    __tablename__ = "prices"

    id: Mapped[int] = mapped_column(primary_key=True)
    exact: Mapped[Decimal | None] = mapped_column(sa.Numeric)
    cents: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 2))


class Stamp(Base):
    """Client-side defaults that only SQLAlchemy's own statements produce, which bulk writes
    (bypassing them) cannot."""

    __tablename__ = "stamps"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.String(40))
    created_at: Mapped[dt.datetime | None] = mapped_column(default=sa.func.current_timestamp())
    rank: Mapped[int | None] = mapped_column(default=sa.literal(5) + 1)
    label: Mapped[str | None] = mapped_column(
        sa.String(40), default=lambda context: context.get_current_parameters()["body"].upper()
    )
    changed_at: Mapped[dt.datetime | None] = mapped_column(onupdate=sa.func.current_timestamp())
    revision: Mapped[int | None] = mapped_column(
        onupdate=lambda context: context.get_current_parameters()["rank"] + 1
    )


class Ticket(Base):
    """A nullable column numbered by a client-side Sequence, whose next value SQLAlchemy's
    INSERTs take on PostgreSQL (SQLite has no sequences: NULL)."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int | None] = mapped_column(sa.Sequence("ticket_numbers"), nullable=True)
    title: Mapped[str] = mapped_column(sa.String(40))


class Note(Base):
    """Python-side onupdates, a value and a function, which an update runs for the fields it
    leaves out."""

    __tablename__ = "edited_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.String(40))
    edited: Mapped[bool] = mapped_column(default=False, onupdate=True)
    touched_at: Mapped[dt.datetime] = mapped_column(default=lambda: EPOCH, onupdate=lambda: LATER)


class Canary(Base):
    """A row that an injected DROP or DELETE would take with it."""

    __tablename__ = "canary"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str] = mapped_column(sa.String(40))
