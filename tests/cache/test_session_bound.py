"""A cached read calling a built-in function that acts (a sequence's nextval, an advisory lock)
or answers for the session rather than the data (a setting a tenant's scoping reads, SQLite's
last_insert_rowid) goes to the database every time, ORM, Core and SQL text alike: an entry
would hand out a number twice, skip a lock or serve one tenant's rows to another (SQLite and
PostgreSQL; memory and Redis; sync, the async read path is shared)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import Database
from dalkit.cache import QueryCache

from .models import Book

books = sa.table("cache_book", sa.column("id"), sa.column("title"))


def read(db: Database, cache: QueryCache, statement: Any, **options: Any) -> list[Any]:
    with db.transaction() as session:
        return list(cache.cached(session, statement, **options).scalars().all())


def postgres_only(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's functions")


@pytest.mark.parametrize(
    "statement",
    [
        sa.select(sa.func.nextval("cache_numbers")),
        sa.text("SELECT nextval('cache_numbers')"),
    ],
    ids=["core", "text"],
)
def test_a_read_taking_a_sequence_s_next_value_takes_a_new_one_each_time(
    db: Database, cache: QueryCache, statement: Any
) -> None:
    postgres_only(db)
    db.sql("CREATE SEQUENCE cache_numbers")
    options = {"tables": ["cache_book"]} if isinstance(statement, sa.TextClause) else {}
    assert [read(db, cache, statement, **options) for _ in range(3)] == [[1], [2], [3]]
    assert (cache.get_stats()["hits"], cache.get_stats()["bypasses"]) == (0, 3)


# a read scoped by the session's setting, directly, through a function, through a view
SCOPED = {
    "call": (
        "",
        sa.select(books.c.id).where(books.c.title == sa.func.current_setting("app.tenant")),
    ),
    "function": (
        "CREATE FUNCTION cache_tenant() RETURNS text LANGUAGE sql STABLE "
        "AS $$ SELECT current_setting('app.tenant') $$",
        sa.select(books.c.id).where(books.c.title == sa.func.cache_tenant()),
    ),
    "view": (
        "CREATE VIEW cache_my_books AS SELECT id FROM cache_book "
        "WHERE title = current_setting('app.tenant')",
        sa.select(sa.table("cache_my_books", sa.column("id")).c.id),
    ),
}


@pytest.mark.parametrize("scoped", list(SCOPED))
def test_a_read_scoped_by_a_session_setting_serves_each_session_its_own_rows(
    db: Database, cache: QueryCache, scoped: str
) -> None:
    postgres_only(db)
    ddl, mine = SCOPED[scoped]
    if ddl:
        db.sql(ddl)
    with db.transaction() as session:
        session.add_all([Book(id=101, title="tenant a"), Book(id=102, title="tenant b")])
    seen = []
    for tenant in ("tenant a", "tenant b", "tenant a"):
        with db.transaction() as session:
            session.execute(sa.select(sa.func.set_config("app.tenant", tenant, True)))
            seen.append(list(cache.cached(session, mine).scalars()))
    assert seen == [[101], [102], [101]]


def test_a_read_taking_an_advisory_lock_takes_it_each_time(db: Database, cache: QueryCache) -> None:
    postgres_only(db)
    lock = sa.select(sa.func.pg_try_advisory_xact_lock(4242))
    assert read(db, cache, lock) == [True]
    with db.transaction() as session:  # held by this transaction: another one cannot take it
        assert cache.cached(session, lock).scalar_one() is True
        other = sa.create_engine(db.engine.url)
        try:
            with other.connect() as connection:
                assert connection.execute(lock).scalar_one() is False
        finally:
            other.dispose()


def test_sqlite_s_answers_for_the_connection_are_never_served_from_the_cache(
    db: Database, cache: QueryCache
) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's functions")
    for function in (sa.func.last_insert_rowid(), sa.func.changes()):
        assert read(db, cache, sa.select(function)) == read(db, cache, sa.select(function))
    assert (cache.get_stats()["hits"], cache.get_stats()["bypasses"]) == (0, 4)
