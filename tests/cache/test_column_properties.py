"""A model's ``column_property`` read with each entity (a correlated count of another table's
rows) makes its cached reads depend on the tables the expression reads: a write to them reaches
the entry (repository ``get`` and ``list``, and ``cached()``; SQLite and PostgreSQL; memory and
Redis)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from dalkit import Database, Repository
from dalkit.cache import QueryCache


class Base(DeclarativeBase):
    pass


class Comment(Base):
    __tablename__ = "cache_cp_comment"
    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(sa.ForeignKey("cache_cp_post.id"))


class Post(Base):
    __tablename__ = "cache_cp_post"
    id: Mapped[int] = mapped_column(primary_key=True)
    comments: Mapped[int] = column_property(
        sa.select(sa.func.count(Comment.id))
        .where(Comment.post_id == id)
        .correlate_except(Comment)
        .scalar_subquery()
    )


class Posts(Repository[Post]):
    cache_ttl = 60


@pytest.fixture
def posts(db: Database, cache: QueryCache) -> QueryCache:
    db.create_all(Base.metadata)
    with db.transaction() as session:
        session.add(Post(id=1))
        session.flush()
        session.add(Comment(id=1, post_id=1))
    return cache


def counts(db: Database) -> tuple[int, list[int]]:
    """A get and a list, each in a transaction of its own (SQLite's snapshot lets only a
    transaction's first read be stored)."""
    with db.transaction() as session:
        one = Posts(session).get(1).comments
    with db.transaction() as session:
        return one, [post.comments for post in Posts(session).list()]


def test_a_write_to_the_table_a_column_property_reads_reaches_the_entry(
    db: Database, posts: QueryCache
) -> None:
    assert counts(db) == counts(db) == (1, [1])
    assert posts.get_stats()["hits"] == 2
    with db.transaction() as session:
        session.add(Comment(id=2, post_id=1))  # cache_cp_post itself is not written
    assert counts(db) == (2, [2])
    with db.transaction() as session:
        count = posts.cached(session, sa.select(Post.comments).where(Post.id == 1)).scalar_one()
    assert count == 2
