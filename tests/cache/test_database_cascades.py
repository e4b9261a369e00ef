"""Foreign keys that cascade in the database, whether or not a model declares them: a cached read
of a table whose rows an UPDATE or a DELETE of another table deletes or changes (CASCADE, SET
NULL, through a chain too) is invalidated by it, on every write path; an INSERT into the other
table leaves it cached (SQLite and PostgreSQL; memory and Redis; sync, the async read path is in
test_async_api)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import Database
from dalkit.cache import QueryCache

from .models import Book, book_table
from .test_write_paths import driver_write

# tables no model declares (a migration's SQL made them)
DDL = (
    "CREATE TABLE cache_review (id INTEGER PRIMARY KEY, "
    "book_id INTEGER REFERENCES cache_book (id) ON DELETE CASCADE, body VARCHAR(20))",
    "CREATE TABLE cache_vote (id INTEGER PRIMARY KEY, "
    "review_id INTEGER REFERENCES cache_review (id) ON DELETE CASCADE)",
    "CREATE TABLE cache_note (id INTEGER PRIMARY KEY, "
    "book_id INTEGER REFERENCES cache_book (id) ON DELETE SET NULL)",
    "INSERT INTO cache_review VALUES (1, 1, 'good'), (2, 2, 'bad')",
    "INSERT INTO cache_vote VALUES (1, 1), (2, 2)",
    "INSERT INTO cache_note VALUES (1, 1), (2, 2)",
)
reviews = sa.select(sa.table("cache_review", sa.column("body")).c.body)
votes = sa.select(sa.table("cache_vote", sa.column("id")).c.id)
notes = sa.select(sa.table("cache_note", sa.column("book_id")).c.book_id)


@pytest.fixture
def tables(db: Database, cache: QueryCache) -> QueryCache:
    for statement in DDL:
        db.sql(statement)
    return cache


def read(db: Database, cache: QueryCache, statement: sa.Select[Any]) -> list[Any]:
    with db.transaction() as session:
        return sorted(cache.cached(session, statement).scalars().all(), key=str)


def _orm_delete(db: Database) -> None:
    with db.transaction() as session:
        book = session.get(Book, 1)
        assert book is not None
        session.delete(book)


def _core_delete(db: Database) -> None:
    with db.transaction() as session:
        session.execute(sa.delete(book_table).where(book_table.c.id == 1))


DELETES: dict[str, Callable[[Database], Any]] = {
    "ORM": _orm_delete,
    "Core": _core_delete,
    "driver and note_write": lambda db: driver_write(
        db, "DELETE FROM cache_book WHERE id = 1", "cache_book"
    ),
    "raw SQL": lambda db: db.sql("DELETE FROM cache_book WHERE id = 1"),
}


@pytest.mark.parametrize("path", list(DELETES))
def test_a_delete_cascading_in_the_database_invalidates_the_tables_it_reaches(
    db: Database, tables: QueryCache, path: str
) -> None:
    assert read(db, tables, reviews) == read(db, tables, reviews) == ["bad", "good"]
    assert read(db, tables, votes) == [1, 2]
    assert read(db, tables, notes) == [1, 2]
    assert tables.get_stats()["hits"] == 1
    DELETES[path](db)
    assert read(db, tables, reviews) == ["bad"]
    assert read(db, tables, votes) == [2]  # two foreign keys away
    assert read(db, tables, notes) == [2, None]  # SET NULL


def test_an_insert_into_the_table_cascaded_from_leaves_the_entries_cached(
    db: Database, tables: QueryCache
) -> None:
    assert read(db, tables, reviews) == ["bad", "good"]
    with db.transaction() as session:
        session.add(Book(id=3, title="c"))
    hits = tables.get_stats()["hits"]
    assert read(db, tables, reviews) == ["bad", "good"]
    assert tables.get_stats()["hits"] == hits + 1
