"""The final wiring: ``Database(..., cache=QueryCache(...))`` binds the cache, ``db.cache`` is
it, and ``db.get_stats()["cache"]`` reports it. Skipped until the Database takes ``cache``."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import dalkit.cache
from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, MemoryBackend, QueryCache

from .models import Base, Book


def cache_of(db: Database | AsyncDatabase) -> Any:
    """``db.cache``, typed loosely until the Database declares it."""
    return db.__dict__["cache"]


def test_database_binds_the_cache_it_is_given(tmp_path: Path) -> None:
    db = Database(
        f"sqlite:///{tmp_path / 'app.db'}",
        cache=QueryCache(backend=MemoryBackend(max_entries=100), default_ttl=30),
    )
    db.create_all(Base.metadata)
    with db.transaction() as session:
        session.add(Book(id=1, title="a"))
    for _ in range(2):
        with db.transaction() as session:
            assert cache_of(db).cached(session, sa.select(Book.title)).scalars().all() == ["a"]
    assert db.get_stats()["cache"]["hits"] == 1
    db.sql("UPDATE cache_book SET title = 'b'")
    with db.transaction() as session:
        assert cache_of(db).cached(session, sa.select(Book.title)).scalars().all() == ["b"]
    assert db.pop_stats()["cache"]["misses"] == 2
    assert cache_of(db).get_stats()["misses"] == 0
    db.dispose()


async def test_async_database_binds_the_async_cache(tmp_path: Path) -> None:
    db = AsyncDatabase(
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        cache=AsyncQueryCache(backend=MemoryBackend(), default_ttl=30),
    )
    await db.create_all(Base.metadata)
    async with db.transaction() as session:
        session.add(Book(id=1, title="a"))
    for _ in range(2):
        async with db.transaction() as session:
            result = await cache_of(db).cached(session, sa.select(Book.title))
            assert result.scalars().all() == ["a"]
    assert db.get_stats()["cache"]["hits"] == 1
    await db.dispose()


def test_the_cache_reads_no_private_attribute_of_the_database() -> None:
    """Only the Database's public API (``replica_engines``, ``engine``...): a private one may
    change with no notice, and dalkit.cache sits above the engine layer."""
    private: list[str] = []
    for path in Path(dalkit.cache.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                owner, name = ast.unparse(node.value), node.attr
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr":
                if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant):
                    continue
                owner, name = ast.unparse(node.args[0]), str(node.args[1].value)
            else:
                continue
            if owner.endswith("database") and name.startswith("_") and not name.endswith("__"):
                private.append(f"{path.name}:{node.lineno}: {owner}.{name}")
    assert private == []  # was getattr(database, "_replicas") in five places
