"""Every write path invalidates at commit, nothing does on rollback, and a transaction reads
its own writes (sync API; SQLite and PostgreSQL; memory and Redis)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload

from dalkit import Database, on_commit
from dalkit.cache import QueryCache, UncacheableStatementError, note_write

from .models import Book, Dog, Tag, author_table, book_table, book_tag


def titles(db: Database, cache: QueryCache) -> list[str]:
    with db.transaction() as session:
        return sorted(cache.cached(session, sa.select(Book.title)).scalars().all())


def warm(db: Database, cache: QueryCache) -> list[str]:
    """Read twice: the second read must be a hit."""
    first = titles(db, cache)
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == first
    assert cache.get_stats()["hits"] == hits + 1
    return first


def insert_statement(db: Database, table: sa.Table) -> Any:
    if db.engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def test_a_repeated_read_is_served_from_the_cache(db: Database, cache: QueryCache) -> None:
    assert warm(db, cache) == ["a", "b"]
    stats = db.get_stats()["cache"]
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)
    assert stats["hit_ratio"] == 0.5


def test_an_orm_flush_insert_update_and_delete_each_invalidate(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.transaction() as session:
        session.add(Book(id=3, title="c", author_id=1))
    assert titles(db, cache) == ["a", "b", "c"]
    warm(db, cache)
    with db.transaction() as session:
        book = session.get(Book, 3)
        assert book is not None
        book.title = "d"
    assert titles(db, cache) == ["a", "b", "d"]
    warm(db, cache)
    with db.transaction() as session:
        session.delete(session.get(Book, 3))
    assert titles(db, cache) == ["a", "b"]


def test_an_association_table_write_invalidates_a_read_loading_the_relationship(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).where(Book.id == 1).options(selectinload(Book.tags))

    def tag_count() -> int:
        with db.transaction() as session:
            return len(cache.cached(session, statement).scalars().one().tags)

    with db.transaction() as session:
        session.add(Tag(id=1, label="x"))
    assert tag_count() == 0
    assert tag_count() == 0
    with db.transaction() as session:
        # only cache_book_tag is written
        session.execute(book_tag.insert().values(book_id=1, tag_id=1))
    assert tag_count() == 1


def test_a_write_to_a_joined_inheritance_table_invalidates_reads_of_the_subclass(
    db: Database, cache: QueryCache
) -> None:
    with db.transaction() as session:
        session.add(Dog(id=1, name="rex", tricks=0))

    def tricks() -> int:
        with db.transaction() as session:
            dog: Dog = cache.cached(session, sa.select(Dog)).scalars().one()
            return dog.tricks

    assert tricks() == 0
    assert tricks() == 0
    with db.transaction() as session:
        dog = session.get(Dog, 1)
        assert dog is not None
        dog.tricks = 3  # an UPDATE of cache_dog alone
    assert tricks() == 3


def test_orm_bulk_insert_update_and_delete_invalidate(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    with db.transaction() as session:
        session.execute(sa.insert(Book), [{"id": 5, "title": "e"}, {"id": 6, "title": "f"}])
    assert titles(db, cache) == ["a", "b", "e", "f"]
    warm(db, cache)
    with db.transaction() as session:
        session.execute(sa.update(Book), [{"id": 5, "title": "g"}])
    assert titles(db, cache) == ["a", "b", "f", "g"]
    warm(db, cache)
    with db.transaction() as session:
        session.execute(sa.delete(Book).where(Book.id >= 5))
    assert titles(db, cache) == ["a", "b"]


def test_core_dml_on_a_connection_outside_dalkit_invalidates(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.engine.begin() as connection:
        connection.execute(book_table.insert().values(id=7, title="h"))
    assert titles(db, cache) == ["a", "b", "h"]
    warm(db, cache)
    with db.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM cache_book WHERE id = 7"))
    assert titles(db, cache) == ["a", "b"]


def test_a_write_on_an_autocommit_connection_invalidates_without_a_commit(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(book_table.insert().values(id=11, title="auto"))
        # already committed: readers see it before the connection is even closed
        assert titles(db, cache) == ["a", "auto", "b"]
    assert titles(db, cache) == ["a", "auto", "b"]


def test_a_rolled_back_connection_write_invalidates_nothing(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    connection = db.engine.connect()
    with connection:
        transaction = connection.begin()
        connection.execute(book_table.insert().values(id=8, title="i"))
        transaction.rollback()
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1


def test_an_upsert_invalidates(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    statement = insert_statement(db, book_table).values(id=1, title="z")
    with db.transaction() as session:
        session.execute(statement.on_conflict_do_update(index_elements=["id"], set_={"title": "z"}))
    assert titles(db, cache) == ["b", "z"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO cache_book (id, title) VALUES (9, 'j')", ["a", "b", "j"]),
        ("UPDATE cache_book SET title = 'k' WHERE id = 2", ["a", "k"]),
        ("DELETE FROM cache_book WHERE id = 2", ["a"]),
    ],
)
def test_db_sql_writes_invalidate(
    db: Database, cache: QueryCache, sql: str, expected: list[str]
) -> None:
    warm(db, cache)
    db.sql(sql)
    assert titles(db, cache) == expected


def test_ddl_invalidates_everything(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    with db.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE cache_unrelated (id INTEGER PRIMARY KEY)")
    misses = cache.get_stats()["misses"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["misses"] == misses + 1


def test_a_cascading_delete_invalidates_the_referencing_table(
    db: Database, cache: QueryCache
) -> None:
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as connection:
            enforced = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        if not enforced:
            pytest.skip("this SQLite connection does not enforce foreign keys")
    warm(db, cache)
    with db.transaction() as session:
        # Core DELETE of the parent only: the books go by ON DELETE CASCADE
        session.execute(sa.delete(author_table).where(author_table.c.id == 1))
    assert titles(db, cache) == []


def driver_write(db: Database, sql: str, table: str) -> None:
    """Run ``sql`` on the driver's connection, which SQLAlchemy never sees, in a transaction
    that names what it wrote with note_write."""
    with db.transaction() as session:
        raw = session.connection().connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        cursor.execute(sql)
        cursor.close()
        note_write(session, table)


def test_a_write_sqlalchemy_never_sees_invalidates_through_note_write(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    driver_write(db, "INSERT INTO cache_book (id, title) VALUES (10, 'copy')", "cache_book")
    assert titles(db, cache) == ["a", "b", "copy"]


def test_a_rolled_back_transaction_leaves_the_entry_cached(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.add(Book(id=11, title="gone"))
        session.flush()
        raise RuntimeError("roll back")
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1
    assert cache.get_stats()["invalidations"] == 0


def test_a_rolled_back_savepoint_invalidates_nothing_of_its_own(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.transaction():
        with pytest.raises(RuntimeError), db.transaction(propagation="nested") as session:
            session.add(Book(id=12, title="gone"))
            session.flush()
            raise RuntimeError("roll back the savepoint")
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1


def test_a_write_after_a_rolled_back_savepoint_still_invalidates(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.transaction() as outer:
        with pytest.raises(RuntimeError), db.transaction(propagation="nested") as session:
            session.add(Book(id=13, title="gone"))
            session.flush()
            raise RuntimeError("roll back the savepoint")
        outer.add(Book(id=14, title="kept"))
    assert titles(db, cache) == ["a", "b", "kept"]


def test_a_change_pending_when_a_savepoint_begins_is_invalidated_though_it_rolls_back(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with db.transaction() as outer:
        outer.add(Book(id=16, title="pending"))  # flushed as the savepoint begins: kept
        with pytest.raises(RuntimeError), db.transaction(propagation="nested"):
            raise RuntimeError("roll back the savepoint")
    assert titles(db, cache) == ["a", "b", "pending"]


def test_a_transaction_reads_its_own_writes(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    with db.transaction() as session:
        session.add(Book(id=15, title="mine"))  # not flushed yet: the read flushes it
        seen = sorted(cache.cached(session, sa.select(Book.title)).scalars().all())
        assert seen == ["a", "b", "mine"]
        assert cache.get_stats()["bypasses"] == 1
    assert titles(db, cache) == ["a", "b", "mine"]


def test_an_entity_from_the_cache_is_attached_and_flushes_an_update(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).where(Book.id == 1)
    for _ in range(2):
        with db.transaction() as session:
            book = cache.cached(session, statement).scalars().one()
    assert cache.get_stats()["hits"] == 1
    with db.transaction() as session:
        book = cache.cached(session, statement).scalars().one()
        assert book in session
        book.title = "changed"
    with db.transaction() as session:
        assert session.get(Book, 1) is not None
        assert session.scalars(sa.select(Book.title).where(Book.id == 1)).one() == "changed"
    assert titles(db, cache) == ["b", "changed"]


def test_reads_at_serializable_bypass_the_cache(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    with db.transaction(isolation="SERIALIZABLE") as session:
        cache.cached(session, sa.select(Book.title)).all()
    assert cache.get_stats()["bypasses"] == 1


def test_a_locking_read_always_reaches_the_database(db: Database, cache: QueryCache) -> None:
    statement = sa.select(Book.title).where(Book.id == 1).with_for_update()
    for _ in range(2):
        with db.transaction() as session:
            assert cache.cached(session, statement).scalar_one() == "a"
    assert cache.get_stats()["bypasses"] == 2


def test_a_text_statement_must_declare_its_tables(db: Database, cache: QueryCache) -> None:
    with db.transaction() as session:
        with pytest.raises(UncacheableStatementError, match="tables="):
            cache.cached(session, sa.text("SELECT title FROM cache_book"))
        with pytest.raises(UncacheableStatementError, match="only reads"):
            cache.cached(session, sa.delete(Book))
    query = sa.text("SELECT title FROM cache_book ORDER BY title")

    def read() -> list[str]:
        with db.transaction() as session:
            return list(cache.cached(session, query, tables=["cache_book"]).scalars())

    assert read() == read() == ["a", "b"]
    db.sql("DELETE FROM cache_book WHERE id = 1")
    assert read() == ["b"]


def test_memoize_caches_a_function_until_its_tables_are_written(
    db: Database, cache: QueryCache
) -> None:
    calls: list[int] = []

    @cache.memoize(ttl=30, tables=["cache_book"])
    def count_books(prefix: str) -> int:
        calls.append(1)
        with db.transaction() as session:
            return len(session.scalars(sa.select(Book).where(Book.title >= prefix)).all())

    assert count_books("a") == count_books("a") == 2
    assert len(calls) == 1
    db.sql("INSERT INTO cache_book (id, title) VALUES (16, 'p')")
    assert count_books("a") == 3
    assert len(calls) == 2


def test_bound_parameters_are_part_of_the_key(db: Database, cache: QueryCache) -> None:
    def title_of(book_id: int) -> str:
        with db.transaction() as session:
            statement = sa.select(Book.title).where(Book.id == book_id)
            return str(cache.cached(session, statement).scalar_one())

    assert [title_of(1), title_of(2), title_of(1), title_of(2)] == ["a", "b", "a", "b"]
    assert cache.get_stats()["hits"] == 2


def test_an_on_commit_callback_reads_what_the_commit_wrote_through_the_cache(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    seen: list[list[str]] = []
    with db.transaction() as session:
        on_commit(lambda: seen.append(titles(db, cache)))  # registered before the first write
        session.add(Book(id=3, title="c"))
    assert seen == [["a", "b", "c"]]  # was served ["a", "b"]: the invalidation ran after it


def test_a_failing_on_commit_callback_cannot_stop_the_invalidation(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with pytest.raises(ZeroDivisionError), db.transaction() as session:
        on_commit(lambda: 1 / 0)  # a failure stops the callbacks after it; the commit stands
        session.add(Book(id=3, title="c"))
    assert titles(db, cache) == ["a", "b", "c"]  # was ["a", "b"] until the TTL


def test_the_invalidation_registered_after_a_rolled_back_savepoint_still_runs_first(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    seen: list[list[str]] = []
    with db.transaction() as session:
        on_commit(lambda: seen.append(titles(db, cache)))
        with pytest.raises(RuntimeError), db.transaction(propagation="nested") as inner:
            inner.add(Book(id=4, title="x"))
            inner.flush()
            raise RuntimeError  # the savepoint and its callbacks are gone
        session.add(Book(id=3, title="c"))  # registers the cache's callback again
    assert seen == [["a", "b", "c"]]


def test_the_invalidation_of_a_first_write_in_a_released_savepoint_runs_first(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    seen: list[list[str]] = []
    with db.transaction():
        on_commit(lambda: seen.append(titles(db, cache)))  # at the outer level
        with db.transaction(propagation="nested") as inner:  # the first write, released
            inner.get_one(Book, 1).title = "z"
    assert seen == [["b", "z"]]  # was served ["a", "b"]: the invalidation ran after it
