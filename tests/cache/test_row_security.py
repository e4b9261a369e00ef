"""Row-level security: which rows a read returns depends on the role and the settings of its
session, which no key holds, so reads of a table with a policy bypass the cache, and another
tenant's rows are never served from it; ``serve_row_security=True`` serves them when the caller
vouches for the key (PostgreSQL; memory and Redis; the catalog tells the cache which tables)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dalkit import Database
from dalkit.cache import QueryCache

secrets = sa.table("cache_secret", sa.column("body"))


@pytest.fixture
def reader(db: Database, cache: QueryCache) -> Iterator[str]:
    """A role the policy applies to (the test's own is a superuser, which no policy binds)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    role = f"cache_reader_{uuid.uuid4().hex[:8]}"
    db.sql("CREATE TABLE cache_secret (tenant TEXT, body TEXT)")
    db.sql("INSERT INTO cache_secret VALUES ('a', 'for a'), ('b', 'for b')")
    db.sql("ALTER TABLE cache_secret ENABLE ROW LEVEL SECURITY")
    db.sql(
        "CREATE POLICY cache_by_tenant ON cache_secret "
        "USING (tenant = current_setting('app.tenant'))"
    )
    db.sql(f"CREATE ROLE {role}")
    db.sql(f"GRANT SELECT ON cache_secret TO {role}")
    yield role
    db.sql(f"DROP OWNED BY {role}")
    db.sql(f"DROP ROLE {role}")


def read_as(db: Database, cache: QueryCache, role: str, tenant: str) -> list[str]:
    with db.transaction() as session:
        session.execute(sa.text(f"SET LOCAL ROLE {role}"))
        setting = sa.text("SELECT set_config('app.tenant', :tenant, true)")
        session.execute(setting, {"tenant": tenant})
        return list(cache.cached(session, sa.select(secrets.c.body)).scalars().all())


def test_a_table_with_a_policy_is_read_from_the_database_every_time(
    db: Database, cache: QueryCache, reader: str
) -> None:
    assert read_as(db, cache, reader, "a") == ["for a"]
    assert read_as(db, cache, reader, "b") == ["for b"]  # not tenant a's rows, cached
    assert read_as(db, cache, reader, "a") == ["for a"]
    stats = cache.get_stats()
    assert (stats["hits"], stats["sets"], stats["bypasses"]) == (0, 0, 3)


def test_serve_row_security_serves_them_when_the_caller_vouches_for_the_key(
    db: Database, cache: QueryCache, reader: str
) -> None:
    cache.serve_row_security = True  # say, one tenant per database_id
    assert read_as(db, cache, reader, "a") == read_as(db, cache, reader, "a") == ["for a"]
    assert cache.get_stats()["hits"] == 1
