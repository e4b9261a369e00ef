"""Conduit's tables: users and who follows whom, articles with their tags and favourites, and
comments. Articles and comments are audited; every relationship refuses to lazy-load, so a
forgotten eager load fails a test instead of becoming an N+1."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import Audited

#: the lengths of the bounded text columns, which the request schemas check as well: PostgreSQL
#: refuses a longer value with an error (a 500), where the client deserves a 422
USERNAME_LENGTH = 64
EMAIL_LENGTH = 254
IMAGE_LENGTH = 1000
TITLE_LENGTH = 255
TAG_LENGTH = 64


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    # bigint keys (the migration linter's advice: an int key runs out at 2^31); SQLite keeps
    # INTEGER, the only type its rowid-backed primary keys autoincrement with
    type_annotation_map = {int: sa.BigInteger().with_variant(sa.Integer(), "sqlite")}  # noqa: RUF012


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(USERNAME_LENGTH), unique=True)
    email: Mapped[str] = mapped_column(sa.String(EMAIL_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(256))
    bio: Mapped[str] = mapped_column(sa.Text, default="")
    image: Mapped[str | None] = mapped_column(sa.String(IMAGE_LENGTH), default=None)

    def __repr__(self) -> str:  # never the password hash
        return f"User(id={self.id!r}, username={self.username!r})"


class Follow(Base):
    __tablename__ = "follows"
    follower_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    followed_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(TAG_LENGTH), unique=True)


article_tags = sa.Table(
    "article_tags",
    Base.metadata,
    sa.Column("article_id", sa.ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Article(Audited, Base):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(300), unique=True)
    title: Mapped[str] = mapped_column(sa.String(TITLE_LENGTH))
    description: Mapped[str] = mapped_column(sa.Text)
    body: Mapped[str] = mapped_column(sa.Text)
    author_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)

    author: Mapped[User] = relationship(lazy="raise")
    # deleting an article leaves its article_tags rows to ON DELETE CASCADE: no load needed
    tags: Mapped[list[Tag]] = relationship(
        secondary=article_tags, lazy="raise", order_by=Tag.name, passive_deletes=True
    )


class Favorite(Base):
    __tablename__ = "favorites"
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        sa.ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Comment(Audited, Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.Text)
    article_id: Mapped[int] = mapped_column(
        sa.ForeignKey("articles.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)

    author: Mapped[User] = relationship(lazy="raise")
