"""A schema per tenant through the URL's ``search_path`` (``?options=-csearch_path=...``):
two Databases of one server, user and database name, each with its own search path, read
different tables under the same SQL; they share a backend (a Redis, or one MemoryBackend), and
each gets entries of its own, while a write through either still invalidates the other's
(tokens stay the database's: a miss, never a stale read). PostgreSQL; memory and Redis. So do
two SQLite files each named ``sqlite:///app.db`` from another working directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import Database, RedisManager
from dalkit.cache import MemoryBackend, QueryCache, RedisBackend, install

from .test_schema_translate import SCHEMAS, create_schemas

THINGS = sa.table("cache_things", sa.column("id"), sa.column("name"))


def on_search_path(url: str, schema: str) -> str:
    return (
        make_url(url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def tenants(
    db: Database, cache_kind: str, request: pytest.FixtureRequest
) -> Iterator[dict[str, tuple[Database, QueryCache]]]:
    """A Database per schema, each on its search path, with caches sharing one backend."""
    create_schemas(db)
    url = db.engine.url.render_as_string(hide_password=False)
    manager = redis = None
    if cache_kind == "memory":
        backend: MemoryBackend | RedisBackend = MemoryBackend(max_entries=1000)
    else:
        manager = RedisManager(request.getfixturevalue("redis_url"))
        backend = redis = RedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}")
    made = {}
    for schema in SCHEMAS:
        tenant_db = Database(on_search_path(url, schema))
        made[schema] = (tenant_db, install(tenant_db, QueryCache(backend)))
    try:
        yield made
    finally:
        for tenant_db, _ in made.values():
            tenant_db.dispose()
        if redis is not None and manager is not None:
            redis.close()
            manager.close()


def name_of(tenant: tuple[Database, QueryCache]) -> str:
    tenant_db, cache = tenant
    with tenant_db.transaction() as session:
        statement = sa.select(THINGS.c.name).where(THINGS.c.id == 1)
        return str(cache.cached(session, statement, tables=["cache_things"]).scalar_one())


def test_each_search_path_of_the_url_gets_its_own_entries(
    tenants: dict[str, tuple[Database, QueryCache]],
) -> None:
    for schema in (*SCHEMAS, *SCHEMAS):
        assert name_of(tenants[schema]) == schema
    for _, cache in tenants.values():
        assert (cache.get_stats()["misses"], cache.get_stats()["hits"]) == (1, 1)


def test_a_write_under_one_search_path_invalidates_the_others_entries(
    tenants: dict[str, tuple[Database, QueryCache]],
) -> None:
    one, two = (tenants[schema] for schema in SCHEMAS)
    assert (name_of(one), name_of(two)) == SCHEMAS
    one[0].sql("UPDATE cache_things SET name = 'renamed'")  # tenant_one's table
    two[0].sql("UPDATE tenant_one.cache_things SET name = 'again'")  # through the other
    assert name_of(one) == "again"


def test_two_sqlite_files_spelled_alike_from_two_directories_get_their_own_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend(max_entries=1000)
    made = {}
    for schema in SCHEMAS:
        (tmp_path / schema).mkdir()
        monkeypatch.chdir(tmp_path / schema)
        tenant_db = Database("sqlite:///app.db")
        tenant_db.sql("CREATE TABLE cache_things (id INTEGER PRIMARY KEY, name TEXT)")
        tenant_db.sql(f"INSERT INTO cache_things VALUES (1, '{schema}')")
        made[schema] = (tenant_db, install(tenant_db, QueryCache(backend)))
    try:
        assert [name_of(made[schema]) for schema in (*SCHEMAS, *SCHEMAS)] == [*SCHEMAS, *SCHEMAS]
    finally:
        for tenant_db, _ in made.values():
            tenant_db.dispose()
