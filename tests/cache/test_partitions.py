"""PostgreSQL's table inheritance: a cached read of a partitioned table is invalidated by a write
naming one of its partitions (two levels down too), a read of a partition by a write through its
parent, and likewise for ``INHERITS``; a write naming one partition leaves a sibling's entries
alone (PostgreSQL; memory and Redis; raw SQL, Core and the ORM; sync, the async read path is in
test_async_api)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Database, Repository
from dalkit.cache import QueryCache

DDL = (
    "CREATE TABLE cache_events (id INTEGER, region TEXT, body TEXT, PRIMARY KEY (id, region))"
    " PARTITION BY LIST (region)",
    "CREATE TABLE cache_events_eu PARTITION OF cache_events FOR VALUES IN ('eu')",
    "CREATE TABLE cache_events_us PARTITION OF cache_events FOR VALUES IN ('us')"
    " PARTITION BY RANGE (id)",
    "CREATE TABLE cache_events_us_low PARTITION OF cache_events_us FOR VALUES FROM (0) TO (100)",
    "INSERT INTO cache_events VALUES (1, 'eu', 'e1'), (2, 'us', 'u2')",
    "CREATE TABLE cache_city (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE cache_capital (country TEXT) INHERITS (cache_city)",
    "INSERT INTO cache_city VALUES (1, 'Lyon')",
    "INSERT INTO cache_capital VALUES (2, 'Paris', 'FR')",
)


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "cache_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    region: Mapped[str] = mapped_column(primary_key=True)
    body: Mapped[str]


class EuEvent(Base):
    __tablename__ = "cache_events_eu"
    id: Mapped[int] = mapped_column(primary_key=True)
    region: Mapped[str] = mapped_column(primary_key=True)
    body: Mapped[str]


class Events(Repository[Event]):
    cache_ttl = 60


class EuEvents(Repository[EuEvent]):
    pass


us_low = sa.Table(  # a table of the metadata: its raw and Core writes are known by name
    "cache_events_us_low", Base.metadata, sa.Column("id", sa.Integer), sa.Column("body", sa.Text)
)
eu = cast(sa.Table, EuEvent.__table__)
city = sa.table("cache_city", sa.column("id"), sa.column("name"))
capital = sa.table("cache_capital", sa.column("id"), sa.column("name"))


@pytest.fixture
def tables(db: Database, cache: QueryCache) -> QueryCache:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("table inheritance is PostgreSQL's")
    for statement in DDL:
        db.sql(statement)
    return cache


def bodies(db: Database, cache: QueryCache, statement: sa.Select[Any]) -> list[str]:
    with db.transaction() as session:
        return sorted(cache.cached(session, statement).scalars().all())


def parent_bodies(db: Database) -> list[str]:
    with db.transaction() as session:
        return sorted(event.body for event in Events(session).list())


def _orm_update_of_the_partition(db: Database) -> None:
    with db.transaction() as session:
        event = session.get(EuEvent, (1, "eu"))
        assert event is not None
        event.body = "new"


def _bulk_insert_into_the_partition(db: Database) -> None:
    with db.transaction() as session:
        EuEvents(session).bulk_insert([{"id": 5, "region": "eu", "body": "new"}])


def _upsert_into_the_partition(db: Database) -> None:
    statement = postgresql.insert(eu).values(id=1, region="eu", body="new")
    with db.transaction() as session:
        session.execute(
            statement.on_conflict_do_update(index_elements=["id", "region"], set_={"body": "new"})
        )


def _core_update_of_the_partition(db: Database) -> None:
    with db.transaction() as session:
        session.execute(sa.update(eu).where(eu.c.id == 1).values(body="new"))


def _core_update_two_levels_down(db: Database) -> None:
    with db.transaction() as session:
        session.execute(sa.update(us_low).values(body="new"))


WRITES_TO_A_PARTITION: dict[str, Callable[[Database], Any]] = {
    "raw SQL": lambda db: db.sql("UPDATE cache_events_eu SET body = 'new' WHERE id = 1"),
    "Core": _core_update_of_the_partition,
    "ORM": _orm_update_of_the_partition,
    "bulk_insert": _bulk_insert_into_the_partition,
    "upsert": _upsert_into_the_partition,
    "two levels down": _core_update_two_levels_down,
}


@pytest.mark.parametrize("path", list(WRITES_TO_A_PARTITION))
def test_a_write_naming_a_partition_invalidates_reads_of_its_parent(
    db: Database, tables: QueryCache, path: str
) -> None:
    assert parent_bodies(db) == parent_bodies(db) == ["e1", "u2"]
    assert tables.get_stats()["hits"] == 1
    WRITES_TO_A_PARTITION[path](db)
    assert "new" in parent_bodies(db)


@pytest.mark.parametrize("path", ["raw SQL", "ORM"])
def test_a_write_through_the_parent_invalidates_reads_of_its_partitions(
    db: Database, tables: QueryCache, path: str
) -> None:
    eu_read, low_read = sa.select(eu.c.body), sa.select(us_low.c.body)
    assert bodies(db, tables, eu_read) == bodies(db, tables, eu_read) == ["e1"]
    assert bodies(db, tables, low_read) == bodies(db, tables, low_read) == ["u2"]
    if path == "raw SQL":
        db.sql("UPDATE cache_events SET body = body || '+'")
    else:
        with db.transaction() as session:
            for event in Events(session).list():
                event.body += "+"
    assert bodies(db, tables, eu_read) == ["e1+"]
    assert bodies(db, tables, low_read) == ["u2+"]


def test_a_write_naming_one_partition_leaves_its_siblings_cached(
    db: Database, tables: QueryCache
) -> None:
    low_read = sa.select(us_low.c.body)
    assert bodies(db, tables, low_read) == ["u2"]
    _orm_update_of_the_partition(db)
    hits = tables.get_stats()["hits"]
    assert bodies(db, tables, low_read) == ["u2"]
    assert tables.get_stats()["hits"] == hits + 1


def test_inherits_children_and_parents_invalidate_each_other(
    db: Database, tables: QueryCache
) -> None:
    cities, capitals = sa.select(city.c.name), sa.select(capital.c.name)
    assert bodies(db, tables, cities) == bodies(db, tables, cities) == ["Lyon", "Paris"]
    assert bodies(db, tables, capitals) == ["Paris"]
    db.sql("INSERT INTO cache_capital VALUES (3, 'Rome', 'IT')")
    assert bodies(db, tables, cities) == ["Lyon", "Paris", "Rome"]
    assert bodies(db, tables, capitals) == ["Paris", "Rome"]
    db.sql("UPDATE cache_city SET name = upper(name)")  # the parent's rows and its children's
    assert bodies(db, tables, capitals) == ["PARIS", "ROME"]


def test_a_partition_attached_here_after_the_first_read_is_followed(
    db: Database, tables: QueryCache
) -> None:
    assert parent_bodies(db) == ["e1", "u2"]
    db.sql("CREATE TABLE cache_events_ap PARTITION OF cache_events FOR VALUES IN ('ap')")
    assert parent_bodies(db) == parent_bodies(db) == ["e1", "u2"]
    db.sql("INSERT INTO cache_events_ap VALUES (3, 'ap', 'a3')")
    assert parent_bodies(db) == ["a3", "e1", "u2"]
