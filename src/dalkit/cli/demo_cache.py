"""The cache section of the tour: a read served from the query cache, a write, the next read
fresh, and the cache's statistics. Works on its own table, ``demo_cache_items``, on a second
Database of the same URL (the cache stays out of the other sections)."""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from dalkit.cache import MemoryBackend, QueryCache, install
from dalkit.cli._render import cell, key_value_table
from dalkit.database import Database

__all__ = ["run_cache_demo"]

_metadata = sa.MetaData()
_items = sa.Table(
    "demo_cache_items",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(40), nullable=False),
)


def run_cache_demo(db: Database, console: Console) -> None:
    cached_db = Database(db.config)
    try:
        with cached_db.engine.begin() as connection:
            _metadata.drop_all(connection)
            _metadata.create_all(connection)
            connection.execute(_items.insert(), [{"id": i, "name": f"item {i}"} for i in (1, 2)])
        cache = install(cached_db, QueryCache(MemoryBackend(max_entries=100), default_ttl=60))
        statement = sa.select(_items.c.name).where(_items.c.id == 1)

        def read() -> str:
            with cached_db.transaction() as session:
                return str(cache.cached(session, statement).scalar_one())

        steps = Table(title="one query, read, written, read again", title_justify="left")
        for column in ("step", "value", "time", "served by"):
            steps.add_column(column)
        _step(steps, cache, "first read", read)
        _step(steps, cache, "second read", read)
        cached_db.sql("UPDATE demo_cache_items SET name = :name WHERE id = 1", name="renamed")
        steps.add_row("UPDATE ... committed", "", "", cell("invalidated at commit"))
        _step(steps, cache, "next read", read)
        _step(steps, cache, "and again", read)
        console.print(steps)
        console.print(key_value_table("cache statistics", cache.get_stats()))
    finally:
        with cached_db.engine.begin() as connection:
            _metadata.drop_all(connection)
        cached_db.dispose()


def _step(table: Table, cache: QueryCache, label: str, read: Callable[[], str]) -> None:
    hits = cache.get_stats()["hits"]
    started = perf_counter()
    value = read()
    took = (perf_counter() - started) * 1000
    served = "cache" if cache.get_stats()["hits"] > hits else "database"
    table.add_row(label, cell(value), cell(f"{took:.2f} ms"), cell(served))
