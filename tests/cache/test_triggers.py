"""What the database writes on its own: a cached read of a table a trigger writes is invalidated
by a write to the table the trigger fires on (a counter, an audit trail, a chain of triggers),
and likewise for a rule; a trigger whose writes cannot be read from its code makes every read
depend on its table; a trigger writing nothing else invalidates nothing else; a write through a
view reaches the tables it reads (SQLite and PostgreSQL; memory and Redis; sync, the async read
path is in test_async_api)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

from dalkit import Database
from dalkit.cache import QueryCache
from dalkit.cache import catalog as catalog_module

from .models import Book

counts = sa.table("cache_counts", sa.column("n"))
trail = sa.table("cache_trail", sa.column("title"))
totals = sa.table("cache_totals", sa.column("n"))


class Base(DeclarativeBase):
    pass


titles_view = sa.Table(  # a table of the metadata: a write through it is known by name
    "cache_titles", Base.metadata, sa.Column("id", sa.Integer), sa.Column("title", sa.String)
)


def trigger(db: Database, table: str, event: str, body: str, *, name: str = "") -> None:
    """A row trigger on ``table`` running ``body`` (SQL statements; PL/pgSQL on PostgreSQL)."""
    name = name or f"{table}_{event.split()[-1].lower()}_trigger"
    if db.engine.dialect.name == "sqlite":
        ddl(db, f"CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW BEGIN {body} END")
        return
    db.sql(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {body} RETURN NULL; END $$"
    )
    db.sql(f"CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()")


def ddl(db: Database, sql: str) -> None:
    """SQL of several statements (a SQLite trigger's body), which ``db.sql`` refuses."""
    with db.engine.begin() as connection:
        connection.exec_driver_sql(sql)


@pytest.fixture
def tables(db: Database, cache: QueryCache) -> QueryCache:
    db.sql("CREATE TABLE cache_counts (n INTEGER)")
    db.sql("INSERT INTO cache_counts VALUES (2)")
    db.sql("CREATE TABLE cache_trail (title VARCHAR(50))")
    db.sql("CREATE TABLE cache_totals (n INTEGER)")
    db.sql("INSERT INTO cache_totals VALUES (0)")
    return cache


def read(db: Database, cache: QueryCache, statement: sa.Select[Any]) -> list[Any]:
    with db.transaction() as session:
        return sorted(cache.cached(session, statement).scalars().all())


def add_book(db: Database, book_id: int, title: str) -> None:
    with db.transaction() as session:
        session.add(Book(id=book_id, title=title))


def test_a_table_a_trigger_writes_is_invalidated_by_a_write_to_its_table(
    db: Database, tables: QueryCache
) -> None:
    trigger(db, "cache_book", "AFTER INSERT", "UPDATE cache_counts SET n = n + 1;")
    trigger(db, "cache_book", "AFTER UPDATE", "INSERT INTO cache_trail VALUES (NEW.title);")
    assert read(db, tables, sa.select(counts.c.n)) == read(db, tables, sa.select(counts.c.n))
    assert read(db, tables, sa.select(trail.c.title)) == []
    assert tables.get_stats()["hits"] == 1
    add_book(db, 3, "c")  # the ORM writes cache_book; the trigger, cache_counts
    assert read(db, tables, sa.select(counts.c.n)) == [3]
    db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")
    assert read(db, tables, sa.select(trail.c.title)) == ["z"]


def test_a_chain_of_triggers_is_followed(db: Database, tables: QueryCache) -> None:
    trigger(db, "cache_book", "AFTER INSERT", "UPDATE cache_counts SET n = n + 1;")
    trigger(db, "cache_counts", "AFTER UPDATE", "UPDATE cache_totals SET n = NEW.n * 10;")
    assert read(db, tables, sa.select(totals.c.n)) == read(db, tables, sa.select(totals.c.n))
    add_book(db, 3, "c")
    assert read(db, tables, sa.select(totals.c.n)) == [30]


def test_a_trigger_writing_nothing_else_invalidates_nothing_else(
    db: Database, tables: QueryCache
) -> None:
    if db.engine.dialect.name == "sqlite":  # a row's own change: SQLite has no BEFORE NEW
        trigger(db, "cache_book", "AFTER INSERT", "SELECT 1;")
    else:
        db.sql(
            "CREATE FUNCTION cache_touch() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.title := lower(NEW.title); PERFORM pg_notify('books', 'new'); "
            "RETURN NEW; END $$"
        )
        db.sql(
            "CREATE TRIGGER cache_touch BEFORE INSERT ON cache_book FOR EACH ROW "
            "EXECUTE FUNCTION cache_touch()"
        )
    assert read(db, tables, sa.select(counts.c.n)) == [2]
    add_book(db, 3, "c")
    hits = tables.get_stats()["hits"]
    assert read(db, tables, sa.select(counts.c.n)) == [2]
    assert tables.get_stats()["hits"] == hits + 1


def test_a_trigger_whose_writes_are_unknown_reaches_every_read(
    db: Database, tables: QueryCache
) -> None:
    if db.engine.dialect.name == "sqlite":
        pytest.skip("a SQLite trigger's statements are all known")
    trigger(db, "cache_book", "AFTER INSERT", "EXECUTE 'UPDATE cache_' || 'counts SET n = 7';")
    assert read(db, tables, sa.select(counts.c.n)) == read(db, tables, sa.select(counts.c.n))
    add_book(db, 3, "c")
    assert read(db, tables, sa.select(counts.c.n)) == [7]


def test_a_write_through_a_view_reaches_the_tables_it_reads(
    db: Database, tables: QueryCache
) -> None:
    db.sql("CREATE VIEW cache_titles AS SELECT id, title FROM cache_book")
    if db.engine.dialect.name == "sqlite":  # PostgreSQL's simple views take writes by themselves
        ddl(
            db,
            "CREATE TRIGGER cache_titles_update INSTEAD OF UPDATE ON cache_titles BEGIN "
            "UPDATE cache_book SET title = NEW.title WHERE id = OLD.id; END",
        )
    assert read(db, tables, sa.select(Book.title)) == read(db, tables, sa.select(Book.title))
    with db.transaction() as session:
        statement = sa.update(titles_view).where(titles_view.c.id == 1).values(title="z")
        session.execute(statement)
    assert read(db, tables, sa.select(Book.title)) == ["b", "z"]


def test_a_table_a_rule_writes_is_invalidated_by_a_write_to_its_table(
    db: Database, tables: QueryCache
) -> None:
    if db.engine.dialect.name == "sqlite":
        pytest.skip("rules are PostgreSQL's")
    db.sql(
        "CREATE RULE cache_book_trail AS ON UPDATE TO cache_book "
        "DO ALSO INSERT INTO cache_trail VALUES (NEW.title)"
    )
    assert read(db, tables, sa.select(trail.c.title)) == read(db, tables, sa.select(trail.c.title))
    with db.transaction() as session:
        book = session.get(Book, 1)
        assert book is not None
        book.title = "z"
    assert read(db, tables, sa.select(trail.c.title)) == ["z"]


def test_a_trigger_another_process_made_is_followed_at_the_next_catalog_read(
    db: Database, db_url: str, tables: QueryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "CATALOG_REFRESH_S", 0.0)  # else once a minute
    assert read(db, tables, sa.select(counts.c.n)) == [2]  # the catalog read here
    with Database(db_url) as other:  # the migration, in another process: its DDL unseen here
        trigger(other, "cache_book", "AFTER INSERT", "UPDATE cache_counts SET n = n + 1;")
    assert read(db, tables, sa.select(counts.c.n)) == read(db, tables, sa.select(counts.c.n))
    add_book(db, 3, "c")
    assert read(db, tables, sa.select(counts.c.n)) == [3]
