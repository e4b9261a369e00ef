"""The async twin: reads served from the cache, invalidation awaited before the transaction
call returns, rollbacks invalidate nothing, own writes visible (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, on_commit
from dalkit.cache import AsyncQueryCache, UncacheableStatementError

from .models import Book, book_table


async def titles(db: AsyncDatabase, cache: AsyncQueryCache) -> list[str]:
    async with db.transaction() as session:
        result = await cache.cached(session, sa.select(Book.title))
        return sorted(result.scalars().all())


async def warm(db: AsyncDatabase, cache: AsyncQueryCache) -> None:
    first = await titles(db, cache)
    hits = cache.get_stats()["hits"]
    assert await titles(db, cache) == first
    assert cache.get_stats()["hits"] == hits + 1


async def test_the_invalidation_is_applied_before_the_transaction_returns(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)
    async with async_db.transaction() as session:
        session.add(Book(id=3, title="c"))
    assert async_cache.get_stats()["invalidations"] == 1
    assert await titles(async_db, async_cache) == ["a", "b", "c"]


async def test_run_transaction_and_db_sql_writes_invalidate(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)

    async def rename(session: object) -> None:
        await async_db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")

    await async_db.run_transaction(rename)
    assert await titles(async_db, async_cache) == ["b", "z"]


async def test_a_write_on_a_plain_connection_invalidates(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)
    async with async_db.engine.begin() as connection:
        await connection.execute(sa.delete(book_table).where(book_table.c.id == 2))
    assert await titles(async_db, async_cache) == ["a"]


async def test_a_rollback_leaves_the_entry_cached(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)
    with pytest.raises(RuntimeError):
        async with async_db.transaction() as session:
            session.add(Book(id=4, title="gone"))
            await session.flush()
            raise RuntimeError("roll back")
    hits = async_cache.get_stats()["hits"]
    assert await titles(async_db, async_cache) == ["a", "b"]
    assert async_cache.get_stats()["hits"] == hits + 1


async def test_a_transaction_reads_its_own_writes(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)
    async with async_db.transaction() as session:
        session.add(Book(id=5, title="mine"))
        result = await async_cache.cached(session, sa.select(Book.title))
        assert sorted(result.scalars().all()) == ["a", "b", "mine"]


async def test_cached_entities_are_attached_to_the_session(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    statement = sa.select(Book).where(Book.id == 2)
    for _ in range(2):
        async with async_db.transaction() as session:
            book = (await async_cache.cached(session, statement)).scalars().one()
    assert async_cache.get_stats()["hits"] == 1
    async with async_db.transaction() as session:
        book = (await async_cache.cached(session, statement)).scalars().one()
        assert book in session
        book.title = "renamed"
    assert await titles(async_db, async_cache) == ["a", "renamed"]


async def test_memoize_and_text_statements(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    calls: list[int] = []

    @async_cache.memoize(tables=[book_table])
    async def count() -> int:
        calls.append(1)
        rows = await async_db.sql("SELECT id FROM cache_book")
        return len(rows)

    assert await count() == await count() == 2
    assert len(calls) == 1
    await async_db.sql("DELETE FROM cache_book WHERE id = 1")
    assert await count() == 1
    async with async_db.transaction() as session:
        with pytest.raises(UncacheableStatementError):
            await async_cache.cached(session, sa.text("SELECT 1"))


async def test_raw_sql_and_declared_tables_in_any_spelling_invalidate(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    schema = "public" if async_db.engine.dialect.name == "postgresql" else "main"
    await warm(async_db, async_cache)
    await async_db.sql(f"UPDATE {schema}.CACHE_BOOK SET title = 'z' WHERE id = 1")
    assert await titles(async_db, async_cache) == ["b", "z"]

    @async_cache.memoize(tables=["Cache_Book"])
    async def count() -> int:
        return len(await async_db.sql("SELECT id FROM cache_book"))

    assert await count() == await count() == 2
    async with async_db.transaction() as session:
        session.add(Book(id=3, title="c"))
    assert await count() == 3
    with pytest.raises(UncacheableStatementError, match="table names, Tables or mapped"):
        async_cache.memoize(tables=[3.5])


async def test_a_view_read_is_invalidated_by_a_write_to_its_table(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await async_db.sql("CREATE VIEW cache_book_titles AS SELECT id, title FROM cache_book")
    view = sa.table("cache_book_titles", sa.column("title"))

    async def read() -> list[str]:
        async with async_db.transaction() as session:
            result = await async_cache.cached(session, sa.select(view.c.title))
            return sorted(result.scalars().all())

    @async_cache.memoize(tables=["cache_book_titles"])
    async def count() -> int:
        return len(await async_db.sql("SELECT id FROM cache_book_titles"))

    assert await read() == await read() == ["a", "b"]
    assert await count() == await count() == 2
    async with async_db.transaction() as session:
        session.add(Book(id=3, title="c"))
    assert await read() == ["a", "b", "c"]
    assert await count() == 3


async def test_each_schema_of_a_translate_map_gets_its_own_entries(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    if async_db.engine.dialect.name != "postgresql":
        pytest.skip("a schema per tenant is PostgreSQL's")
    for schema in ("tenant_one", "tenant_two"):
        await async_db.sql(f"CREATE SCHEMA {schema}")
        await async_db.sql(f"CREATE TABLE {schema}.cache_book (id INTEGER, title TEXT)")
        await async_db.sql(f"INSERT INTO {schema}.cache_book VALUES (1, '{schema}')")
    for schema in ("tenant_one", "tenant_two", "tenant_one", "tenant_two"):
        async with async_db.transaction() as session:
            await session.connection(execution_options={"schema_translate_map": {None: schema}})
            result = await async_cache.cached(session, sa.select(Book.title))
            assert result.scalars().all() == [schema]
    assert (async_cache.get_stats()["misses"], async_cache.get_stats()["hits"]) == (2, 2)


async def test_a_read_of_a_partitioned_table_is_invalidated_by_a_write_to_a_partition(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    if async_db.engine.dialect.name != "postgresql":
        pytest.skip("table inheritance is PostgreSQL's")
    await async_db.sql("CREATE TABLE cache_log (id INTEGER, body TEXT) PARTITION BY RANGE (id)")
    await async_db.sql("CREATE TABLE cache_log_a PARTITION OF cache_log FOR VALUES FROM (0) TO (9)")
    await async_db.sql("INSERT INTO cache_log VALUES (1, 'a')")
    log = sa.table("cache_log", sa.column("body"))

    async def read() -> list[str]:
        async with async_db.transaction() as session:
            result = await async_cache.cached(session, sa.select(log.c.body))
            return sorted(result.scalars().all())

    assert await read() == await read() == ["a"]
    await async_db.sql("INSERT INTO cache_log_a VALUES (2, 'b')")  # names the partition
    assert await read() == ["a", "b"]


async def test_a_table_a_trigger_writes_is_invalidated_by_a_write_to_its_table(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await async_db.sql("CREATE TABLE cache_counts (n INTEGER)")
    await async_db.sql("INSERT INTO cache_counts VALUES (2)")
    body = "UPDATE cache_counts SET n = n + 1;"
    if async_db.engine.dialect.name == "sqlite":
        ddl = [f"CREATE TRIGGER cache_count AFTER INSERT ON cache_book BEGIN {body} END"]
    else:
        ddl = [
            "CREATE FUNCTION cache_count() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {body} RETURN NULL; END $$",
            "CREATE TRIGGER cache_count AFTER INSERT ON cache_book FOR EACH ROW "
            "EXECUTE FUNCTION cache_count()",
        ]
    async with async_db.engine.begin() as connection:
        for statement in ddl:
            await connection.exec_driver_sql(statement)
    counts = sa.table("cache_counts", sa.column("n"))

    async def read() -> list[int]:
        async with async_db.transaction() as session:
            result = await async_cache.cached(session, sa.select(counts.c.n))
            return list(result.scalars().all())

    assert await read() == await read() == [2]
    async with async_db.transaction() as session:
        session.add(Book(id=3, title="c"))  # the trigger writes cache_counts
    assert await read() == [3]


async def test_a_cascade_no_model_declares_invalidates_the_table_it_reaches(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await async_db.sql(
        "CREATE TABLE cache_review (id INTEGER PRIMARY KEY, "
        "book_id INTEGER REFERENCES cache_book (id) ON DELETE CASCADE)"
    )
    await async_db.sql("INSERT INTO cache_review VALUES (1, 1), (2, 2)")
    reviews = sa.table("cache_review", sa.column("id"))

    async def read() -> list[int]:
        async with async_db.transaction() as session:
            result = await async_cache.cached(session, sa.select(reviews.c.id))
            return sorted(result.scalars().all())

    assert await read() == await read() == [1, 2]
    async with async_db.transaction() as session:
        await session.execute(sa.delete(book_table).where(book_table.c.id == 1))
    assert await read() == [2]


async def test_a_table_with_row_level_security_bypasses_the_cache(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    if async_db.engine.dialect.name != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    role = f"cache_reader_{uuid.uuid4().hex[:8]}"
    for ddl in (
        "CREATE TABLE cache_secret (tenant TEXT, body TEXT)",
        "INSERT INTO cache_secret VALUES ('a', 'for a'), ('b', 'for b')",
        "ALTER TABLE cache_secret ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_tenant ON cache_secret USING (tenant = current_setting('app.t'))",
        f"CREATE ROLE {role}",
        f"GRANT SELECT ON cache_secret TO {role}",
    ):
        await async_db.sql(ddl)
    secrets = sa.table("cache_secret", sa.column("body"))
    try:
        for tenant in ("a", "b", "a"):
            async with async_db.transaction() as session:
                await session.execute(sa.text(f"SET LOCAL ROLE {role}"))
                await session.execute(sa.text(f"SET LOCAL app.t = '{tenant}'"))
                result = await async_cache.cached(session, sa.select(secrets.c.body))
                assert result.scalars().all() == [f"for {tenant}"]
        assert async_cache.get_stats()["bypasses"] == 3
    finally:
        await async_db.sql(f"DROP OWNED BY {role}")
        await async_db.sql(f"DROP ROLE {role}")


async def test_functions_the_database_defines_are_followed_both_ways(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    if async_db.engine.dialect.name != "postgresql":
        pytest.skip("functions written in SQL are PostgreSQL's")
    await async_db.sql("CREATE TABLE cache_fn_lines (n INTEGER)")
    await async_db.sql("INSERT INTO cache_fn_lines VALUES (1), (2)")
    await async_db.sql(
        "CREATE FUNCTION cache_total() RETURNS integer LANGUAGE sql STABLE AS "
        "$$ SELECT coalesce(sum(n), 0)::int FROM cache_fn_lines $$"
    )
    lines = sa.table("cache_fn_lines", sa.column("n"))

    async def read(statement: Any) -> list[int]:
        async with async_db.transaction() as session:
            return sorted((await async_cache.cached(session, statement)).scalars().all())

    total = sa.select(sa.func.cache_total())
    assert await read(total) == await read(total) == [3]  # reads what the function reads
    await async_db.sql("INSERT INTO cache_fn_lines VALUES (4)")
    assert await read(total) == [7]
    for moved in ("DELETE FROM cache_fn_lines WHERE n = 4", "DELETE FROM cache_fn_lines"):
        assert await read(sa.select(lines.c.n)) == await read(sa.select(lines.c.n))
        # DDL: the map is dropped; a dalkit transaction's commit reads the catalog again
        # before its invalidation, a commit outside them (an engine event) invalidates all
        await async_db.sql(
            "CREATE OR REPLACE FUNCTION cache_move() RETURNS integer LANGUAGE sql AS "
            f"$$ {moved} RETURNING 0 $$"
        )
        if "=" in moved:
            async with async_db.transaction() as session:
                await session.execute(sa.text("SELECT cache_move()"))
        else:
            async with async_db.engine.begin() as connection:  # outside dalkit's transactions
                await connection.exec_driver_sql("SELECT cache_move()")
        assert await read(sa.select(lines.c.n)) == ([1, 2] if "=" in moved else [])


async def test_read_entities_gives_the_entities_of_a_miss_a_hit_and_a_bypass(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    statement = sa.select(Book).order_by(Book.id)
    key, tables = async_cache.describe(statement, None, None)
    for expected_hits in (0, 1):  # a miss, then a hit served without building a result
        async with async_db.transaction() as session:
            books = await async_cache.read_entities(session, statement, None, tables, key, 60.0)
            assert [book.title for book in books] == ["a", "b"]
            assert books[0] is await session.get(Book, 1)
        assert async_cache.get_stats()["hits"] == expected_hits
    async with async_db.transaction() as session:
        books[0].title = "stale"  # detached: the next session's entities are its own
        session.add(Book(id=3, title="c"))
        await session.flush()  # its own write: the read bypasses the cache and sees it
        books = await async_cache.read_entities(session, statement, None, tables, key, 60.0)
        assert [book.title for book in books] == ["a", "b", "c"]
        books[1].title = "z"
    assert async_cache.get_stats()["bypasses"] == 1
    async with async_db.transaction() as session:
        books = await async_cache.read_entities(session, statement, None, tables, key, 60.0)
        assert [book.title for book in books] == ["a", "z", "c"]


async def test_a_request_cancelled_in_an_earlier_on_commit_callback_still_invalidates(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)

    async def request() -> None:
        async with async_db.transaction() as session:
            on_commit(lambda: asyncio.sleep(10))  # say, publishing an event; registered first
            session.add(Book(id=3, title="c"))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(request(), 0.5)  # cancelled in that callback, after COMMIT
    assert await titles(async_db, async_cache) == ["a", "b", "c"]  # was ["a", "b"]


async def test_the_invalidation_of_a_first_write_in_a_released_savepoint_runs_first(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)
    seen: list[list[str]] = []

    async def read() -> None:
        seen.append(await titles(async_db, async_cache))

    async with async_db.transaction():
        on_commit(read)  # at the outer level
        async with async_db.transaction(propagation="nested") as inner:  # the first write
            (await inner.get_one(Book, 1)).title = "z"
    assert seen == [["b", "z"]]  # was served ["a", "b"]: the invalidation ran after it


async def test_a_change_pending_when_a_savepoint_begins_is_invalidated_though_it_rolls_back(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    await warm(async_db, async_cache)
    async with async_db.transaction() as outer:
        outer.add(Book(id=16, title="pending"))  # flushed as the savepoint begins: kept
        with pytest.raises(RuntimeError):
            async with async_db.transaction(propagation="nested"):
                raise RuntimeError("roll back the savepoint")
    assert await titles(async_db, async_cache) == ["a", "b", "pending"]
