"""A cached read of a view is invalidated by writes to the tables the view reads (views of views
and joins too, views created after the first read too); a lightweight ``sa.table()`` counts as
its table; SQL text that may read tables must be declared (SQLite and PostgreSQL; memory and
Redis; sync; the async read path is in test_async_api)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import Database, DatabaseError
from dalkit.cache import QueryCache, UncacheableStatementError
from dalkit.cache import catalog as catalog_module

from .models import Author, Book

VIEWS = (
    "CREATE VIEW cache_book_titles AS SELECT id, title FROM cache_book",
    "CREATE VIEW cache_titles_a AS SELECT title FROM cache_book_titles WHERE title >= 'a'",
    "CREATE VIEW cache_authors_books AS SELECT a.name, b.title FROM cache_author a "
    "JOIN cache_book b ON b.author_id = a.id",
)
titles_view = sa.table("cache_book_titles", sa.column("id"), sa.column("title"))
titles_a = sa.table("cache_titles_a", sa.column("title"))
pairs = sa.table("cache_authors_books", sa.column("name"), sa.column("title"))


@pytest.fixture
def views(db: Database, cache: QueryCache) -> QueryCache:
    for ddl in VIEWS:
        db.sql(ddl)
    return cache


def read(db: Database, cache: QueryCache, statement: sa.Select[Any]) -> list[str]:
    with db.transaction() as session:
        return sorted(cache.cached(session, statement).scalars().all())


def test_a_view_read_is_invalidated_by_a_write_to_its_table(
    db: Database, views: QueryCache
) -> None:
    statement = sa.select(titles_view.c.title)
    assert read(db, views, statement) == read(db, views, statement) == ["a", "b"]
    hits = views.get_stats()["hits"]
    with db.transaction() as session:  # the ORM writes cache_book, never the view
        book = session.get(Book, 2)
        assert book is not None
        book.title = "c"
    assert read(db, views, statement) == ["a", "c"]
    assert views.get_stats()["hits"] == hits


@pytest.mark.parametrize("target", ["view of a view", "join view"])
def test_views_of_views_and_joins_reach_every_table_beneath(
    db: Database, views: QueryCache, target: str
) -> None:
    statement = sa.select(titles_a.c.title if target == "view of a view" else pairs.c.title)
    assert read(db, views, statement) == read(db, views, statement) == ["a", "b"]
    db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")
    assert read(db, views, statement) == ["b", "z"]
    if target == "join view":
        assert read(db, views, sa.select(pairs.c.name)) == ["Ann", "Ann"]
        with db.transaction() as session:
            author = session.get(Author, 1)
            assert author is not None
            author.name = "Bea"
        assert read(db, views, sa.select(pairs.c.name)) == ["Bea", "Bea"]


@pytest.mark.parametrize("creator", ["this database", "another engine"])
def test_a_view_created_after_the_first_read_is_known(
    db: Database, db_url: str, cache: QueryCache, creator: str
) -> None:
    assert read(db, cache, sa.select(Book.title)) == ["a", "b"]  # the catalog read once here
    ddl = "CREATE VIEW cache_late AS SELECT title FROM cache_book"
    if creator == "this database":
        db.sql(ddl)  # DDL seen here: the catalog is read again at the next read
    else:  # unseen here (another process, a migration): its name is unknown, so read again
        other = sa.create_engine(db_url)
        with other.begin() as connection:
            connection.exec_driver_sql(ddl)
        other.dispose()
    late = sa.select(sa.table("cache_late", sa.column("title")).c.title)
    assert read(db, cache, late) == read(db, cache, late) == ["a", "b"]
    db.sql("DELETE FROM cache_book WHERE id = 1")
    assert read(db, cache, late) == ["b"]


def test_a_view_read_before_it_existed_is_found_at_the_next_check(
    db: Database, db_url: str, cache: QueryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "MISSING_RECHECK_S", 0.0)  # else once a minute
    late = sa.select(sa.table("cache_later", sa.column("title")).c.title)
    with pytest.raises(DatabaseError):  # new code ahead of its migration: the catalog lacks it
        read(db, cache, late)
    other = sa.create_engine(db_url)  # the migration, in another process
    with other.begin() as connection:
        connection.exec_driver_sql("CREATE VIEW cache_later AS SELECT title FROM cache_book")
    other.dispose()
    assert read(db, cache, late) == read(db, cache, late) == ["a", "b"]
    db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")
    assert read(db, cache, late) == ["b", "z"]


def test_a_view_redefined_here_depends_on_its_new_tables(db: Database, views: QueryCache) -> None:
    statement = sa.select(titles_view.c.title)
    assert read(db, views, statement) == ["a", "b"]
    db.sql("DROP VIEW cache_titles_a")
    db.sql("DROP VIEW cache_book_titles")
    db.sql("CREATE VIEW cache_book_titles AS SELECT id, name AS title FROM cache_author")
    assert read(db, views, statement) == read(db, views, statement) == ["Ann"]
    with db.transaction() as session:
        author = session.get(Author, 1)
        assert author is not None
        author.name = "Bea"
    assert read(db, views, statement) == ["Bea"]


def test_a_memoized_function_declaring_a_view_is_invalidated_by_its_table(
    db: Database, views: QueryCache
) -> None:
    @views.memoize(tables=["cache_book_titles"])
    def count() -> int:
        return len(db.sql("SELECT id FROM cache_book_titles"))

    assert count() == count() == 2
    with db.transaction() as session:
        session.add(Book(id=3, title="c", author_id=1))
    assert count() == 3


def test_a_memoized_value_that_cannot_be_pickled_is_returned_and_not_stored(
    db: Database, cache: QueryCache
) -> None:
    calls: list[int] = []

    @cache.memoize(tables=["cache_book"])
    def titled() -> Any:
        calls.append(1)
        return lambda: len(db.sql("SELECT id FROM cache_book"))  # a lambda: no pickle

    assert titled()() == titled()() == 2
    assert len(calls) == 2
    assert (cache.get_stats()["sets"], cache.get_stats()["errors"]) == (0, 0)


def test_a_lightweight_table_counts_as_its_table(db: Database, cache: QueryCache) -> None:
    book = sa.table("cache_book", sa.column("title"))
    statement = sa.select(book.c.title)
    assert read(db, cache, statement) == read(db, cache, statement) == ["a", "b"]
    db.sql("UPDATE cache_book SET title = 'k' WHERE id = 2")
    assert read(db, cache, statement) == ["a", "k"]


@pytest.mark.parametrize(
    "statement",
    [
        sa.select(sa.literal_column("title")).select_from(sa.text("cache_book")),
        sa.select(Book.title).where(sa.text("author_id IN (SELECT id FROM cache_author)")),
        sa.select(sa.literal_column("(SELECT count(*) FROM cache_book)")),
    ],
    ids=["text FROM", "text subquery", "literal column query"],
)
def test_sql_text_that_may_read_tables_must_declare_them(
    db: Database, cache: QueryCache, statement: sa.Select[tuple[str]]
) -> None:
    with db.transaction() as session:
        with pytest.raises(UncacheableStatementError, match="must declare them"):
            cache.cached(session, statement)
        assert cache.cached(session, statement, tables=["cache_book", "cache_author"]).all()


def test_a_plain_text_condition_needs_no_declaration(db: Database, cache: QueryCache) -> None:
    # FROM and WITH are no subquery (as in EXTRACT(YEAR FROM d)); only SELECT is
    statement = sa.select(Book.title).where(
        sa.text("title > 'a' AND title NOT IN ('from', 'with')")
    )
    assert read(db, cache, statement) == read(db, cache, statement) == ["b"]
    db.sql("UPDATE cache_book SET title = 'c' WHERE id = 2")
    assert read(db, cache, statement) == ["c"]
