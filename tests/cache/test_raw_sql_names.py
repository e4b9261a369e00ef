"""Raw SQL reaches the entries of the table it writes however it spells the table's name (case,
schema, quotes), and reaches the tables its foreign keys cascade to even as the first write of
the process; tables declared to the cache are named the same way (SQLite and PostgreSQL;
memory and Redis)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import Database
from dalkit.cache import QueryCache, UncacheableStatementError

from .models import Book, Dog
from .test_write_paths import titles, warm


def default_schema(db: Database) -> str:
    return "public" if db.engine.dialect.name == "postgresql" else "main"


@pytest.mark.parametrize(
    "target",
    ["CACHE_BOOK", "Cache_Book", '"cache_book"', "{schema}.cache_book", '{schema} . "cache_book"'],
)
def test_a_raw_write_invalidates_whatever_case_or_schema_names_the_table(
    db: Database, cache: QueryCache, target: str
) -> None:
    warm(db, cache)
    name = target.format(schema=default_schema(db))
    db.sql(f"UPDATE {name} SET title = 'k' WHERE id = 2")
    assert titles(db, cache) == ["a", "k"]
    warm(db, cache)
    db.sql(f"DELETE FROM {name} WHERE id = 2")
    assert titles(db, cache) == ["a"]


def test_a_transaction_reads_its_own_raw_write_whatever_spelling_it_used(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.transaction() as session:
        session.execute(sa.text("UPDATE CACHE_BOOK SET title = 'own' WHERE id = 1"))
        own = sorted(cache.cached(session, sa.select(Book.title)).scalars().all())
        assert own == ["b", "own"]
    assert titles(db, cache) == ["b", "own"]


def _enforces_foreign_keys(db: Database) -> bool:
    if db.engine.dialect.name != "sqlite":
        return True
    with db.engine.connect() as connection:
        return bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())


def test_a_raw_delete_as_the_first_write_invalidates_the_tables_it_cascades_to(
    db: Database, cache: QueryCache
) -> None:
    if not _enforces_foreign_keys(db):
        pytest.skip("this SQLite connection does not enforce foreign keys")
    warm(db, cache)
    # the parent only, in capitals: the books go by ON DELETE CASCADE
    db.sql("DELETE FROM CACHE_AUTHOR WHERE id = 1")
    assert titles(db, cache) == []


def test_a_raw_delete_of_a_table_no_schema_knows_invalidates_what_cascades_from_it(
    db: Database, cache: QueryCache
) -> None:
    if not _enforces_foreign_keys(db):
        pytest.skip("this SQLite connection does not enforce foreign keys")
    db.sql("CREATE TABLE cache_unmodelled (id INTEGER PRIMARY KEY, book_id INTEGER)")
    db.sql(
        "CREATE TABLE cache_unmodelled_child (id INTEGER PRIMARY KEY, "
        "parent_id INTEGER REFERENCES cache_unmodelled (id) ON DELETE CASCADE)"
    )
    db.sql("INSERT INTO cache_unmodelled VALUES (1, 1)")
    db.sql("INSERT INTO cache_unmodelled_child VALUES (1, 1)")
    children = sa.select(sa.table("cache_unmodelled_child", sa.column("id")).c.id)
    with db.transaction() as session:
        assert cache.cached(session, children).scalars().all() == [1]
    warm(db, cache)
    hits = cache.get_stats()["hits"]
    # no model or create_all told this process of it: the database's catalog tells readers
    db.sql("DELETE FROM cache_unmodelled WHERE id = 1")
    with db.transaction() as session:
        assert cache.cached(session, children).scalars().all() == []
    assert titles(db, cache) == ["a", "b"]  # not everything: the books are still cached
    assert cache.get_stats()["hits"] == hits + 1


def test_a_raw_insert_invalidates_its_table_only(db: Database, cache: QueryCache) -> None:
    db.sql("CREATE TABLE cache_unmodelled (id INTEGER PRIMARY KEY, book_id INTEGER)")
    warm(db, cache)
    hits = cache.get_stats()["hits"]
    db.sql("INSERT INTO Cache_Unmodelled (id, book_id) VALUES (1, 1)")  # an INSERT cascades nothing
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1


@pytest.mark.parametrize("declared", ["CACHE_BOOK", "{schema}.cache_book", Book])
def test_tables_declared_in_any_spelling_or_as_a_model_are_invalidated(
    db: Database, cache: QueryCache, declared: object
) -> None:
    if isinstance(declared, str):
        declared = declared.format(schema=default_schema(db))
    query = sa.text("SELECT title FROM cache_book ORDER BY title")

    def read() -> list[str]:
        with db.transaction() as session:
            return list(cache.cached(session, query, tables=[declared]).scalars())

    @cache.memoize(tables=[declared])
    def count() -> int:
        return len(read())

    assert read() == read() == ["a", "b"]
    assert count() == count() == 2
    with db.transaction() as session:
        session.add(Book(id=3, title="c", author_id=1))
    assert read() == ["a", "b", "c"]
    assert count() == 3


def test_a_declared_model_names_every_table_it_maps(db: Database, cache: QueryCache) -> None:
    query = sa.text("SELECT count(*) FROM cache_dog")
    with db.transaction() as session:
        cache.cached(session, query, tables=[Dog]).scalar_one()
    with db.transaction() as session:  # a write to the inherited table alone
        session.execute(sa.text("UPDATE cache_animal SET name = 'x'"))
    misses = cache.get_stats()["misses"]
    with db.transaction() as session:
        cache.cached(session, query, tables=[Dog]).scalar_one()
    assert cache.get_stats()["misses"] == misses + 1


def test_a_declared_table_of_another_kind_is_refused(db: Database, cache: QueryCache) -> None:
    with db.transaction() as session:
        with pytest.raises(UncacheableStatementError, match="table names, Tables or mapped"):
            cache.cached(session, sa.text("SELECT 1"), tables=[42])
    with pytest.raises(UncacheableStatementError, match="table names, Tables or mapped"):
        cache.memoize(tables=[Book.title])


def test_a_materialized_view_s_refresh_invalidates_it_alone(
    db: Database, cache: QueryCache
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("materialized views are PostgreSQL's")
    db.sql("CREATE MATERIALIZED VIEW cache_titles_mv AS SELECT title FROM cache_book")
    snapshot = sa.select(sa.table("cache_titles_mv", sa.column("title")).c.title)
    with db.transaction() as session:
        assert sorted(cache.cached(session, snapshot).scalars().all()) == ["a", "b"]
    db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")  # the view keeps its rows
    warm(db, cache)
    hits = cache.get_stats()["hits"]
    db.sql("REFRESH MATERIALIZED VIEW cache_titles_mv")  # a refresh every minute, say
    with db.transaction() as session:
        assert sorted(cache.cached(session, snapshot).scalars().all()) == ["b", "z"]
    assert titles(db, cache) == ["b", "z"]  # not everything: the books are still cached
    assert cache.get_stats()["hits"] == hits + 1


def test_a_truncate_invalidates_its_tables_and_with_cascade_everything(
    db: Database, cache: QueryCache
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    db.sql("CREATE TABLE cache_unmodelled (id INTEGER PRIMARY KEY)")
    db.sql("INSERT INTO cache_unmodelled VALUES (1)")
    ids = sa.select(sa.table("cache_unmodelled", sa.column("id")).c.id)
    with db.transaction() as session:
        assert cache.cached(session, ids).scalars().all() == [1]
    warm(db, cache)
    hits = cache.get_stats()["hits"]
    db.sql("TRUNCATE TABLE Cache_Unmodelled RESTART IDENTITY")
    with db.transaction() as session:
        assert cache.cached(session, ids).scalars().all() == []
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1
    db.sql("TRUNCATE cache_book_tag CASCADE")  # and whatever references it
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1
