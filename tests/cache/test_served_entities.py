"""Entities served from the cache, from memory and from Redis, behave like loaded ones: one
identity per row in a session, relationships loaded eagerly stay loaded, changes flush."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from dalkit import Database
from dalkit.cache import QueryCache

from .models import Author, Book


def test_a_hit_for_an_entity_the_session_holds_returns_that_instance(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).where(Book.id == 1)
    with db.transaction() as session:
        cache.cached(session, statement)  # stores the entry
    with db.transaction() as session:
        held = session.get(Book, 1)
        served = cache.cached(session, statement).scalar_one()
        assert served is held
    assert cache.get_stats()["hits"] == 1


def test_a_hit_with_the_same_entity_in_two_rows_serves_one_instance(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book, Author).join(Book.author).order_by(Book.id)
    for _ in range(2):
        with db.transaction() as session:
            rows: list[tuple[Any, ...]] = [tuple(row) for row in cache.cached(session, statement)]
            assert [book.title for book, _author in rows] == ["a", "b"]
            assert rows[0][1] is rows[1][1]
            assert rows[0][1] is session.get(Author, 1)
    assert cache.get_stats()["hits"] == 1


def test_eagerly_loaded_relationships_are_served_loaded_and_changes_flush(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Author).options(selectinload(Author.books))
    for _ in range(2):
        with db.transaction() as session:
            author = cache.cached(session, statement).scalar_one()
            assert sorted(book.title for book in author.books) == ["a", "b"]
    assert cache.get_stats()["hits"] == 1
    with db.transaction() as session:
        author = cache.cached(session, statement).scalar_one()
        author.books[0].title = "changed"
    with db.transaction() as session:
        assert session.get(Book, author.books[0].id).title == "changed"  # type: ignore[union-attr]


@pytest.mark.parametrize("eager", [False, True], ids=["entity rows", "frozen result"])
def test_read_entities_serves_the_entities_of_a_miss_a_hit_and_a_bypass(
    db: Database, cache: QueryCache, eager: bool
) -> None:
    # plain entities are stored as entity rows, served without building a result; an
    # eagerly loaded relationship makes the entry a frozen result, served through one
    statement = sa.select(Author).order_by(Author.id)
    if eager:
        statement = statement.options(selectinload(Author.books))
    key, tables = cache.describe(statement, None, None)
    for expected_hits in (0, 1):  # a miss, then a hit
        with db.transaction() as session:
            entities = cache.read_entities(session, statement, None, tables, key, 60.0)
            assert entities == [session.get(Author, 1)]
            assert entities[0].name == "Ann"
            entities[0].name = "Bea"  # served entities are the session's: changes flush
            session.rollback()
        assert cache.get_stats()["hits"] == expected_hits
    with db.transaction() as session:
        session.add(Author(id=2, name="Cy"))
        session.flush()  # its own write: the read bypasses the cache and sees it
        entities = cache.read_entities(session, statement, None, tables, key, 60.0)
        assert [author.name for author in entities] == ["Ann", "Cy"]
    stats = cache.get_stats()
    assert (stats["hits"], stats["bypasses"]) == (1, 1)
    with db.transaction() as session:
        served = cache.read_entities(session, statement, None, tables, key, 60.0)
        assert [author.name for author in served] == ["Ann", "Cy"]
        served[0].name = "Di"
    with db.transaction() as session:
        assert session.get(Author, 1).name == "Di"  # type: ignore[union-attr]
