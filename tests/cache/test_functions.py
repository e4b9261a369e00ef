"""The database's own functions (PostgreSQL): a cached read calling one depends on the tables it
reads (SQL, SQL-standard and PL/pgSQL bodies, functions calling functions); a read calling one
that writes, or whose reads its code hides, goes to the database every time; a statement calling
one (raw SQL, Core, an UPDATE's SET, a trigger's expression) invalidates what it writes, in its
own transaction too, from a process that never read the catalog, and after another process
redefined it (memory and Redis; sync, the async paths are in test_async_api)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import Database, RedisManager
from dalkit.cache import QueryCache, RedisBackend, install
from dalkit.cache import catalog as catalog_module

from .models import Book
from .test_triggers import ddl, trigger

lines = sa.table("cache_fn_lines", sa.column("n"))
archive = sa.table("cache_fn_archive", sa.column("n"))
# a Table: an UPDATE of a lightweight table() would invalidate everything, hiding the call
counter = sa.Table("cache_fn_counter", sa.MetaData(), sa.Column("n", sa.Integer))

# cache_total(): the sum of cache_fn_lines, in each form a body may take
TOTALS = {
    "sql": "LANGUAGE sql STABLE AS $$ SELECT coalesce(sum(n), 0)::int FROM cache_fn_lines $$",
    "sql-standard": (
        "LANGUAGE sql STABLE BEGIN ATOMIC SELECT coalesce(sum(n), 0)::int FROM cache_fn_lines; END"
    ),
    "plpgsql": (
        "LANGUAGE plpgsql STABLE AS $$ BEGIN "
        "RETURN (SELECT coalesce(sum(n), 0)::int FROM cache_fn_lines); END $$"
    ),
    "calling another": "LANGUAGE sql STABLE AS $$ SELECT cache_inner() $$",
}
# cache_move(): moves cache_fn_lines to cache_fn_archive
MOVE = """CREATE FUNCTION cache_move() RETURNS integer LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO cache_fn_archive SELECT n FROM cache_fn_lines;
        DELETE FROM cache_fn_lines;
        RETURN 0;
    END $$"""


@pytest.fixture
def functions(db: Database, cache: QueryCache) -> QueryCache:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("functions written in SQL are PostgreSQL's")
    db.sql("CREATE TABLE cache_fn_lines (n INTEGER)")
    db.sql("INSERT INTO cache_fn_lines VALUES (1), (2)")
    db.sql("CREATE TABLE cache_fn_archive (n INTEGER)")
    db.sql("CREATE TABLE cache_fn_counter (n INTEGER)")
    db.sql("INSERT INTO cache_fn_counter VALUES (0)")
    db.sql(MOVE)
    return cache


@contextmanager
def _cold_writer(db: Database, cache: QueryCache, redis_url: str) -> Iterator[Database]:
    """Another Database on the same server and Redis cache, as another process would be: one
    that has never read the catalog."""
    writer = Database(db.engine.url.render_as_string(hide_password=False))
    manager = RedisManager(redis_url)
    backend = cache.backend
    assert isinstance(backend, RedisBackend)
    install(writer, QueryCache(RedisBackend(manager, prefix=backend.prefix)))
    try:
        yield writer
    finally:
        writer.dispose()
        manager.close()


def read(db: Database, cache: QueryCache, statement: Any) -> list[Any]:
    with db.transaction() as session:
        return sorted(cache.cached(session, statement).scalars().all())


def stats(cache: QueryCache) -> tuple[int, int]:
    found = cache.get_stats()
    return found["hits"], found["bypasses"]


@pytest.mark.parametrize("body", list(TOTALS))
def test_a_read_calling_a_function_depends_on_the_tables_it_reads(
    db: Database, functions: QueryCache, body: str
) -> None:
    db.sql(
        "CREATE FUNCTION cache_inner() RETURNS integer LANGUAGE sql STABLE AS "
        "$$ SELECT coalesce(sum(n), 0)::int FROM cache_fn_lines $$"
    )
    ddl(db, f"CREATE FUNCTION cache_total() RETURNS integer {TOTALS[body]}")
    total = sa.select(sa.func.cache_total())
    assert read(db, functions, total) == read(db, functions, total) == [3]
    assert stats(functions) == (1, 0)  # cached
    db.sql("INSERT INTO cache_fn_lines VALUES (4)")
    assert read(db, functions, total) == [7]


def test_a_read_calling_a_function_whose_reads_its_code_hides_goes_to_the_database(
    db: Database, functions: QueryCache
) -> None:
    db.sql(
        "CREATE FUNCTION cache_total() RETURNS integer LANGUAGE plpgsql STABLE AS $$ "
        "DECLARE found integer; BEGIN "
        "EXECUTE format('SELECT sum(n)::int FROM %I', 'cache_fn_lines') INTO found; "
        "RETURN found; END $$"
    )
    total = sa.select(sa.func.cache_total())
    assert read(db, functions, total) == read(db, functions, total) == [3]
    assert stats(functions) == (0, 2)
    db.sql("INSERT INTO cache_fn_lines VALUES (4)")
    assert read(db, functions, total) == [7]


def test_a_read_calling_a_function_that_writes_runs_it_every_time(
    db: Database, functions: QueryCache
) -> None:
    db.sql(
        "CREATE FUNCTION cache_tick() RETURNS integer LANGUAGE sql AS "
        "$$ UPDATE cache_fn_counter SET n = n + 1 RETURNING n $$"
    )
    tick = sa.select(sa.func.cache_tick())
    assert [read(db, functions, tick) for _ in range(3)] == [[1], [2], [3]]
    assert stats(functions) == (0, 3)


def _raw(db: Database) -> None:
    db.sql("SELECT cache_move()")


def _core(db: Database) -> None:
    with db.transaction() as session:
        session.execute(sa.select(sa.func.cache_move()))


def _update_set(db: Database) -> None:
    with db.transaction() as session:
        session.execute(sa.update(counter).values(n=sa.func.cache_move()))


@pytest.mark.parametrize("call", [_raw, _core, _update_set], ids=["raw", "core", "update set"])
def test_a_statement_calling_a_function_invalidates_the_tables_it_writes(
    db: Database, functions: QueryCache, call: Any
) -> None:
    statements = [sa.select(lines.c.n), sa.select(archive.c.n)]
    assert [read(db, functions, s) for s in statements] == [[1, 2], []]
    assert [read(db, functions, s) for s in statements] == [[1, 2], []]
    call(db)
    assert [read(db, functions, s) for s in statements] == [[], [1, 2]]


def test_a_transaction_reads_what_a_function_it_called_wrote(
    db: Database, functions: QueryCache
) -> None:
    assert read(db, functions, sa.select(lines.c.n)) == [1, 2]
    with db.transaction() as session:
        session.execute(sa.text("SELECT cache_move()"))
        assert functions.cached(session, sa.select(lines.c.n)).scalars().all() == []
    assert read(db, functions, sa.select(lines.c.n)) == []


def test_a_trigger_calling_a_function_in_an_expression_invalidates_what_it_writes(
    db: Database, functions: QueryCache
) -> None:
    db.sql(
        "CREATE FUNCTION cache_keep(title text) RETURNS boolean LANGUAGE sql AS "
        "$$ INSERT INTO cache_fn_archive VALUES (length(title)) RETURNING true $$"
    )
    trigger(db, "cache_book", "AFTER INSERT", "IF cache_keep(NEW.title) THEN NULL; END IF;")
    assert read(db, functions, sa.select(archive.c.n)) == []
    with db.transaction() as session:
        session.add(Book(id=3, title="abcd"))
    assert read(db, functions, sa.select(archive.c.n)) == [4]


@pytest.mark.parametrize(
    "call", ["PERFORM cache_keep(NEW.title);", "CALL cache_keep_p(NEW.title);"]
)
def test_a_trigger_calling_a_function_for_its_effects_invalidates_what_it_writes_alone(
    db: Database, functions: QueryCache, call: str
) -> None:
    db.sql(
        "CREATE FUNCTION cache_keep(title text) RETURNS void LANGUAGE sql AS "
        "$$ INSERT INTO cache_fn_archive VALUES (length(title)) $$"
    )
    db.sql(
        "CREATE PROCEDURE cache_keep_p(title text) LANGUAGE sql AS "
        "$$ INSERT INTO cache_fn_archive VALUES (length(title)) $$"
    )
    trigger(db, "cache_book", "AFTER INSERT", call)
    statements = [sa.select(archive.c.n), sa.select(counter.c.n)]
    assert [read(db, functions, s) for s in statements] == [[], [0]]
    with db.transaction() as session:
        session.add(Book(id=3, title="abcd"))
    assert [read(db, functions, s) for s in statements] == [[4], [0]]
    assert stats(functions)[0] == 1  # the counter, which the trigger does not write


def test_a_writer_that_never_read_the_catalog_invalidates_what_a_function_wrote(
    db: Database, functions: QueryCache, cache_kind: str, redis_url: str
) -> None:
    if cache_kind != "redis":
        pytest.skip("two databases share a Redis cache; process memory is each one's own")
    assert read(db, functions, sa.select(lines.c.n)) == [1, 2]
    with _cold_writer(db, functions, redis_url) as writer:
        _raw(writer)
    assert read(db, functions, sa.select(lines.c.n)) == []


def test_a_function_another_process_redefined_is_followed_once_the_map_is_old(
    db: Database, functions: QueryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.sql("CREATE FUNCTION cache_chore() RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$")
    assert read(db, functions, sa.select(lines.c.n)) == [1, 2]
    other = sa.create_engine(db.engine.url)  # DDL this process's cache does not see
    with other.begin() as connection:
        connection.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION cache_chore() RETURNS integer LANGUAGE sql AS "
            "$$ DELETE FROM cache_fn_lines RETURNING 0 $$"
        )
    other.dispose()
    monkeypatch.setattr(catalog_module, "CATALOG_REFRESH_S", 0.0)  # a minute has gone by
    db.sql("SELECT cache_chore()")
    assert read(db, functions, sa.select(lines.c.n)) == []


def test_a_read_of_a_view_calling_a_function_depends_on_the_tables_it_reads(
    db: Database, functions: QueryCache
) -> None:
    db.sql(
        "CREATE FUNCTION cache_total() RETURNS integer LANGUAGE sql STABLE AS "
        "$$ SELECT coalesce(sum(n), 0)::int FROM cache_fn_lines $$"
    )
    db.sql("CREATE VIEW cache_fn_totals AS SELECT cache_total() AS total")
    totals = sa.select(sa.table("cache_fn_totals", sa.column("total")).c.total)
    assert read(db, functions, totals) == read(db, functions, totals) == [3]
    assert stats(functions) == (1, 0)
    db.sql("INSERT INTO cache_fn_lines VALUES (4)")
    assert read(db, functions, totals) == [7]


def test_an_insert_whose_column_default_calls_a_function_invalidates_what_it_writes(
    db: Database, functions: QueryCache
) -> None:
    db.sql(  # a gapless number: the counter row is the one source of invoice numbers
        "CREATE FUNCTION cache_next_number() RETURNS integer LANGUAGE sql AS "
        "$$ UPDATE cache_fn_counter SET n = n + 1 RETURNING n $$"
    )
    ddl(
        db,
        "CREATE TABLE cache_fn_invoices (id serial PRIMARY KEY, "
        "number integer NOT NULL DEFAULT cache_next_number())",
    )
    invoices = sa.Table(
        "cache_fn_invoices", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)
    )
    assert read(db, functions, sa.select(counter.c.n)) == [0]
    with db.transaction() as session:  # names neither the function nor the counter
        session.execute(sa.insert(invoices))
    assert read(db, functions, sa.select(counter.c.n)) == [1]


ARCHIVE_PROCEDURE = """CREATE PROCEDURE cache_archive() LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO cache_fn_archive SELECT n FROM cache_fn_lines;
        DELETE FROM cache_fn_lines;
    END $$"""


def test_a_procedure_s_call_invalidates_what_its_code_writes_and_nothing_else(
    db: Database, functions: QueryCache
) -> None:
    ddl(db, ARCHIVE_PROCEDURE)
    statements = [sa.select(lines.c.n), sa.select(archive.c.n), sa.select(counter.c.n)]
    assert [read(db, functions, s) for s in statements] == [[1, 2], [], [0]]
    db.sql("CALL cache_archive()")
    assert [read(db, functions, s) for s in statements] == [[], [1, 2], [0]]
    assert stats(functions)[0] == 1  # the counter, which the procedure does not write


def test_a_procedure_s_call_before_the_map_is_read_invalidates_everything(
    db: Database, functions: QueryCache, cache_kind: str, redis_url: str
) -> None:
    if cache_kind != "redis":
        pytest.skip("two databases share a Redis cache; process memory is each one's own")
    ddl(db, ARCHIVE_PROCEDURE)
    assert read(db, functions, sa.select(counter.c.n)) == [0]
    with _cold_writer(db, functions, redis_url) as writer:
        writer.sql("CALL cache_archive()")  # its map unread: everything, the counter too
    assert read(db, functions, sa.select(counter.c.n)) == [0]
    assert stats(functions)[0] == 0  # a miss
    assert read(db, functions, sa.select(lines.c.n)) == []


@pytest.mark.parametrize(
    "body",
    ["REFRESH MATERIALIZED VIEW cache_fn_report", "DROP TABLE IF EXISTS cache_fn_scratch"],
    ids=["refresh", "ddl"],
)
def test_a_function_refreshing_a_view_or_running_ddl_invalidates_what_it_changes(
    db: Database, functions: QueryCache, body: str
) -> None:
    db.sql(
        "CREATE MATERIALIZED VIEW cache_fn_report AS SELECT count(*)::int AS n FROM cache_fn_lines"
    )
    ddl(
        db,
        "CREATE FUNCTION cache_chore() RETURNS integer LANGUAGE plpgsql AS "
        f"$$ BEGIN {body}; RETURN 0; END $$",
    )
    report = sa.select(sa.table("cache_fn_report", sa.column("n")).c.n)
    assert read(db, functions, report) == [2]
    db.sql("INSERT INTO cache_fn_lines VALUES (3)")
    assert read(db, functions, report) == [2]  # not refreshed: still right
    db.sql("SELECT cache_chore()")
    assert read(db, functions, report) == [3 if body.startswith("REFRESH") else 2]
    assert stats(functions)[0] == 1  # the second read alone: the call invalidated the view
