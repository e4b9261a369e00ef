"""Keys from compiled statements and bound values; tables found from the statement itself;
raw SQL targets parsed; configuration errors are typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import selectinload

from dalkit import ConfigurationError, Database, RedisManager
from dalkit.cache import (
    AsyncQueryCache,
    AsyncRedisBackend,
    MemoryBackend,
    QueryCache,
    RedisBackend,
    install,
)
from dalkit.cache.keys import KeyBuilder
from dalkit.cache.reads import tables_read
from dalkit.cache.tables import dependents, table_name, text_write

from .models import Animal, Author, Base, Book, Dog, Tag, author_table, tag_table

DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def test_equal_statements_share_a_key_and_different_values_do_not() -> None:
    keys = KeyBuilder(DIALECT, "ns")
    one = keys.key(sa.select(Book).where(Book.id == 1))
    assert one == keys.key(sa.select(Book).where(Book.id == 1))
    assert one != keys.key(sa.select(Book).where(Book.id == 2))
    assert keys.key(sa.select(Book).where(Book.id.in_([1, 2]))) != keys.key(
        sa.select(Book).where(Book.id.in_([1, 3]))
    )
    assert keys.key(sa.select(Book).options(selectinload(Book.tags))) != keys.key(sa.select(Book))
    assert keys.key(sa.text("SELECT :a"), {"a": 1}) != keys.key(sa.text("SELECT :a"), {"a": 2})


def test_a_reused_statement_keeps_its_key_and_computed_values_are_read_again() -> None:
    keys = KeyBuilder(DIALECT, "ns")
    statement = sa.select(Book).where(Book.id == sa.bindparam("pk0"))
    assert keys.key(statement, {"pk0": 1}) == keys.key(statement, {"pk0": 1})
    assert keys.key(statement, {"pk0": 1}) != keys.key(statement, {"pk0": 2})
    current = [1]
    computed = sa.select(Book).where(Book.id == sa.bindparam("x", callable_=lambda: current[0]))
    first = keys.key(computed)
    current[0] = 2
    assert keys.key(computed) != first
    assert keys.key_and_shape(sa.text("SELECT 1"))[1] is not None


def test_a_key_never_contains_the_bound_values() -> None:
    keys = KeyBuilder(DIALECT, "ns")
    key = keys.key(sa.select(Book).where(Book.title == "secret-title"))
    assert "secret" not in key
    assert key.startswith("ns:e:")


def test_tables_are_found_in_joins_subqueries_ctes_and_relationship_loads() -> None:
    assert tables_read(sa.select(Book).join(Author)) == {"cache_book", "cache_author"}
    titles = sa.select(Book.author_id).where(Book.title == "x").scalar_subquery()
    assert tables_read(sa.select(Author).where(Author.id == titles)) == {
        "cache_author",
        "cache_book",
    }
    cte = sa.select(Tag.id).cte()
    assert tables_read(sa.select(cte.c.id)) == {"cache_tag"}
    loaded = sa.select(Author).options(selectinload(Author.books).selectinload(Book.tags))
    assert tables_read(loaded) == {"cache_author", "cache_book", "cache_tag", "cache_book_tag"}
    assert tables_read(sa.select(Dog)) == {"cache_animal", "cache_dog"}
    assert tables_read(sa.select(Animal.name)) == {"cache_animal"}


def test_cascading_foreign_keys_name_the_referencing_tables() -> None:
    assert dependents(author_table) == {"cache_book", "cache_book_tag"}
    assert dependents(tag_table) == {"cache_book_tag"}


def test_a_cascading_key_to_a_table_its_schema_lacks_is_compared_by_name() -> None:
    schema = sa.MetaData()
    parent = sa.Table("parent", schema, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "child",
        schema,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ghost_id", sa.ForeignKey("ghost.id", ondelete="CASCADE")),
        sa.Column("parent_id", sa.ForeignKey("parent.id", ondelete="CASCADE")),
    )
    ghost = sa.Table("Ghost", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    assert dependents(parent) == {"child"}
    assert dependents(ghost) == set()  # another schema's: its own tables only
    assert table_name("Public.Ghost") == table_name(ghost) == "ghost"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM cache_book", None),
        ("select * from comment", None),
        ("INSERT INTO cache_book (id) VALUES (1)", {"cache_book"}),
        ("insert or replace into cache_book (id) values (1)", {"cache_book"}),
        ('UPDATE "s"."t" SET a = 1', {"t"}),
        ("UPDATE Public.Cache_Book SET a = 1", {"cache_book"}),
        ('delete from "My ""odd"" Table" where a = 1', {'my "odd" table'}),
        ("INSERT INTO main . cache_book (id) VALUES (1)", {"cache_book"}),
        ("EXECUTE write_books(1)", {"*"}),
        ("UPDATE OR IGNORE cache_book SET id = 2", {"cache_book"}),
        ("DELETE FROM ONLY cache_book WHERE id = 1", {"cache_book"}),
        ("CREATE TABLE z (id int)", {"*"}),
        ("TRUNCATE cache_book", {"cache_book"}),
        ("TRUNCATE cache_book CASCADE", {"*"}),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY totals", {"totals"}),
        ("CREATE TEMP TABLE _staging (id int) ON COMMIT DROP", None),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"*"}),
    ],
)
def test_raw_sql_targets_are_parsed_or_everything_is_invalidated(
    sql: str, expected: set[str] | None
) -> None:
    written = text_write(sql)
    assert (None if written is None else written[0]) == (
        None if expected is None else frozenset(expected)
    )


def test_bad_configuration_gets_typed_errors() -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryBackend(max_entries=0)
    with pytest.raises(ConfigurationError, match="default_ttl"):
        QueryCache(MemoryBackend(), default_ttl=0)
    manager = RedisManager("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="AsyncRedisBackend"):
        AsyncRedisBackend(manager)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no async API"):
        AsyncQueryCache(RedisBackend(manager))
    cache = QueryCache(MemoryBackend())
    with pytest.raises(ConfigurationError, match="not bound"):
        cache.key_of(sa.select(Book), None)
    with pytest.raises(ConfigurationError, match="ttl must be"):
        cache.ttl_of(-1)
    for endless in (float("nan"), float("inf")):  # kept for ever in memory, refused by Redis
        with pytest.raises(ConfigurationError, match="ttl must be a positive number"):
            cache.ttl_of(endless)
        with pytest.raises(ConfigurationError, match="default_ttl"):
            QueryCache(MemoryBackend(), default_ttl=endless)


def test_a_redis_backend_never_shows_the_password() -> None:
    backend = RedisBackend(RedisManager("redis://:hunter2@127.0.0.1:1/0"))
    assert "hunter2" not in repr(backend)
    assert "hunter2" not in repr(QueryCache(backend))
    backend.close()


def _titles_read_twice(databases: list[Database], caches: list[QueryCache]) -> list[str]:
    """A book titled "from one" in the first database, "from two" in the second; then each
    database's title read through its cache, twice in turn."""
    for db, title in zip(databases, ("from one", "from two"), strict=True):
        db.create_all(Base.metadata)
        db.sql("INSERT INTO cache_book (id, title) VALUES (1, :title)", title=title)
    seen = []
    for db, cache in zip(databases * 2, caches * 2, strict=True):
        with db.transaction() as session:
            seen.append(cache.cached(session, sa.select(Book.title)).scalar_one())
    return seen


def test_two_databases_sharing_a_backend_never_serve_each_other(tmp_path: Path) -> None:
    backend = MemoryBackend()
    databases = [Database(f"sqlite:///{tmp_path / name}.db") for name in ("one", "two")]
    caches = [install(db, QueryCache(backend)) for db in databases]
    seen = _titles_read_twice(databases, caches)
    assert seen == ["from one", "from two"] * 2
    for db in databases:
        db.dispose()


def test_two_database_objects_of_one_database_sharing_a_backend_see_each_other_s_commits(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    databases = [Database(f"sqlite:///{tmp_path / 'one.db'}") for _ in range(2)]
    caches = [install(db, QueryCache(backend)) for db in databases]
    databases[0].create_all(Base.metadata)
    databases[0].sql("INSERT INTO cache_book (id, title) VALUES (1, 'old')")
    read = sa.select(Book.title)
    for _ in range(2):
        with databases[1].transaction() as session:
            assert caches[1].cached(session, read).scalar_one() == "old"
    databases[0].sql("UPDATE cache_book SET title = 'new'")
    with databases[1].transaction() as session:  # was "old": each engine a namespace of its own
        assert caches[1].cached(session, read).scalar_one() == "new"
    for db in databases:
        db.dispose()


@pytest.mark.parametrize("name", ["sqlite://", "sqlite:///:memory:"])
def test_two_in_memory_databases_sharing_a_redis_never_serve_each_other(
    redis_url: str, name: str
) -> None:
    manager = RedisManager(redis_url)
    backends = [RedisBackend(manager, prefix="memory-dbs") for _ in range(2)]  # one prefix
    databases = [Database(name) for _ in backends]  # the same URL, two databases
    caches = [install(db, QueryCache(b)) for db, b in zip(databases, backends, strict=True)]
    seen = _titles_read_twice(databases, caches)
    assert seen == ["from one", "from two"] * 2  # the second was served "from one"
    for db, backend in zip(databases, backends, strict=True):
        db.dispose()
        backend.close()
    manager.close()


def test_a_named_shared_memory_database_shares_its_entries_within_the_process(
    redis_url: str,
) -> None:
    name = "sqlite:///file:cachedb?mode=memory&cache=shared&uri=true"
    manager = RedisManager(redis_url)
    backends = [RedisBackend(manager, prefix="memory-dbs") for _ in range(2)]
    databases = [Database(name) for _ in backends]  # two engines, one database
    caches = [install(db, QueryCache(b)) for db, b in zip(databases, backends, strict=True)]
    assert caches[0].namespace == caches[1].namespace
    for db, backend in zip(databases, backends, strict=True):
        db.dispose()
        backend.close()
    manager.close()
