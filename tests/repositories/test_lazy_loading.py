"""Lazy relationship loads (sync only: async sessions cannot lazy load) keep soft-deleted rows
hidden, and strict repositories refuse them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import Database, Repository

from .models import EPOCH, Post, User


class Users(Repository[User]):
    pass


class StrictUsers(Repository[User]):
    strict_loading = True


@pytest.fixture
def author_id(database: Database) -> int:
    with database.session() as session:
        author = User(email="a@example.com", name="a")
        author.posts = [Post(title="kept"), Post(title="deleted", deleted_at=EPOCH)]
        session.add(author)
        session.flush()
        return author.id


def test_a_lazy_load_hides_soft_deleted_rows(database: Database, author_id: int) -> None:
    with database.session() as session:
        author = Users(session).get(author_id)
        assert [p.title for p in author.posts] == ["kept"]
    with database.session() as session:
        (author,) = Users(session).list()
        assert [p.title for p in author.posts] == ["kept"]


def test_a_lazy_load_from_a_strict_repository_raises(database: Database, author_id: int) -> None:
    with database.session() as session:
        author = StrictUsers(session).get(author_id)
        with pytest.raises(sa.exc.InvalidRequestError, match=r"lazy=.raise."):
            _ = author.posts
