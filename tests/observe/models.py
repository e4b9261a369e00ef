"""Models for the observe tests: authors and their posts, and repositories over them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import AsyncRepository, Repository


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "obs_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    posts: Mapped[list[Post]] = relationship(back_populates="author", order_by="Post.id")


class Post(Base):
    __tablename__ = "obs_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(100))
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("obs_authors.id"), index=True)
    author: Mapped[Author] = relationship(back_populates="posts")


class Posts(Repository[Post]):
    pass


class Authors(Repository[Author]):
    pass


class AsyncPosts(AsyncRepository[Post]):
    pass


class AsyncAuthors(AsyncRepository[Author]):
    pass


def seed_rows() -> list[Author]:
    """Five authors with two posts each."""
    return [
        Author(name=f"author {i}", posts=[Post(title=f"post {i}.{n}") for n in range(2)])
        for i in range(5)
    ]
