"""A schema per tenant through ``schema_translate_map``: the same statement reads another
schema's table under another map, so each map gets entries of its own, whether the map is on
the session's connection, on the engine or on the statement (PostgreSQL; memory and Redis;
repositories and ``cached()``)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dalkit import Database, Repository
from dalkit.cache import QueryCache

SCHEMAS = ("tenant_one", "tenant_two")


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "cache_things"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Things(Repository[Thing]):
    cache_ttl = 60


def create_schemas(db: Database) -> None:
    """Each of `SCHEMAS` with a ``cache_things`` table whose one row is named after it (skips
    the test off PostgreSQL)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a schema per tenant is PostgreSQL's")
    for schema in SCHEMAS:
        db.sql(f"CREATE SCHEMA {schema}")
        db.sql(f"CREATE TABLE {schema}.cache_things (id INTEGER PRIMARY KEY, name TEXT)")
        db.sql(f"INSERT INTO {schema}.cache_things VALUES (1, '{schema}')")


@pytest.fixture
def schemas(db: Database, cache: QueryCache) -> QueryCache:
    create_schemas(db)
    return cache


def _on(session: Session, schema: str) -> None:
    session.connection(execution_options={"schema_translate_map": {None: schema}})


def test_each_schema_of_a_translate_map_gets_its_own_entries(
    db: Database, schemas: QueryCache
) -> None:
    for schema in (*SCHEMAS, *SCHEMAS):
        with db.transaction() as session:
            _on(session, schema)
            thing = Things(session).get(1)
            assert thing is not None
            assert thing.name == schema
            assert schemas.cached(session, sa.select(Thing.name)).scalar_one() == schema
    stats = schemas.get_stats()
    assert (stats["misses"], stats["hits"]) == (4, 4)


def test_a_map_on_the_statement_or_the_engine_keys_the_entry_too(
    db: Database, schemas: QueryCache
) -> None:
    for schema in SCHEMAS:
        statement = sa.select(Thing.name).execution_options(schema_translate_map={None: schema})
        with db.transaction() as session:
            assert schemas.cached(session, statement).scalar_one() == schema
    for schema in SCHEMAS:  # a session of its own, bound to an engine carrying the map
        engine = db.engine.execution_options(schema_translate_map={None: schema})
        with Session(engine) as session:
            assert schemas.cached(session, sa.select(Thing.name)).scalar_one() == schema
