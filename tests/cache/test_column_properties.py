"""What loading a model reads beyond its own table: a ``column_property`` read with each entity
(a correlated count of another table's rows), ``with_expression`` and ``with_loader_criteria``
options (a lambda's too), and the tables of
its subclasses (``polymorphic_load="selectin"``) make its cached reads depend on those tables:
a write to them reaches the entry (repository ``get`` and ``list``, and ``cached()``; SQLite and
PostgreSQL; memory and Redis)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    column_property,
    mapped_column,
    query_expression,
    with_expression,
    with_loader_criteria,
)

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
    latest: Mapped[int | None] = query_expression()


class Staff(Base):
    __tablename__ = "cache_cp_staff"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "staff"}  # noqa: RUF012


class Manager(Staff):
    __tablename__ = "cache_cp_manager"
    id: Mapped[int] = mapped_column(sa.ForeignKey("cache_cp_staff.id"), primary_key=True)
    budget: Mapped[int]
    __mapper_args__ = {  # noqa: RUF012
        "polymorphic_identity": "manager",
        "polymorphic_load": "selectin",
    }


class Posts(Repository[Post]):
    cache_ttl = 60


@pytest.fixture
def posts(db: Database, cache: QueryCache) -> QueryCache:
    db.create_all(Base.metadata)
    with db.transaction() as session:
        session.add(Post(id=1))
        session.flush()
        session.add_all([Comment(id=1, post_id=1), Manager(id=1, budget=10)])
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


def test_a_write_to_the_table_a_with_expression_reads_reaches_the_entry(
    db: Database, posts: QueryCache
) -> None:
    latest = sa.select(sa.func.max(Staff.id)).scalar_subquery()  # no table of Post's
    statement = sa.select(Post).options(with_expression(Post.latest, latest))

    def read() -> int | None:
        with db.transaction() as session:
            post: Post = posts.cached(session, statement).scalar_one()
            return post.latest

    assert read() == read() == 1
    with db.transaction() as session:
        session.add(Staff(id=5))
    assert read() == 5


def test_a_write_to_a_subclass_table_reaches_the_entries_of_its_base(
    db: Database, posts: QueryCache
) -> None:
    def budgets() -> list[int]:
        with db.transaction() as session:
            staff = posts.cached(session, sa.select(Staff)).scalars().all()
            return [member.budget for member in staff if isinstance(member, Manager)]

    assert budgets() == budgets() == [10]
    assert posts.get_stats()["hits"] == 1
    managers = Manager.__table__
    assert isinstance(managers, sa.Table)
    with db.transaction() as session:
        session.execute(sa.update(managers).values(budget=20))  # its own table only
    assert budgets() == [20]


@pytest.mark.parametrize("form", ["expression", "lambda"])
def test_a_write_to_the_table_a_loader_criteria_reads_reaches_the_entry(
    db: Database, posts: QueryCache, form: str
) -> None:
    with db.transaction() as session:
        session.add(Comment(id=2, post_id=1))
    if form == "expression":
        staffed = with_loader_criteria(Comment, Comment.id.in_(sa.select(Staff.id)))
    else:
        staffed = with_loader_criteria(Comment, lambda cls: cls.id.in_(sa.select(Staff.id)))

    def read() -> list[int]:
        with db.transaction() as session:
            found = posts.cached(session, sa.select(Comment).options(staffed)).scalars().all()
            return sorted(comment.id for comment in found)

    assert read() == read() == [1]
    assert posts.get_stats()["hits"] == 1
    with db.transaction() as session:
        session.add(Staff(id=2))
    assert read() == [1, 2]


def test_a_result_that_cannot_be_pickled_is_served_and_not_stored(
    db: Database, posts: QueryCache
) -> None:
    # a lambda's criteria ride on the entities loaded (for their lazy loads); these entities
    # are not plain ones (a query_expression left unloaded), so the result would be pickled
    staffed = with_loader_criteria(Post, lambda cls: cls.id.in_(sa.select(Staff.id)))
    for _ in range(2):
        with db.transaction() as session:
            found = posts.cached(session, sa.select(Post).options(staffed)).scalars().all()
            assert [post.id for post in found] == [1]
    stats = posts.get_stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (0, 2, 0)
