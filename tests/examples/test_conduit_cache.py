"""Conduit's query cache: the tags in use and the article lists are served from it on the next
call, and every write the API makes (an article, a favourite, a tag, an edit, a deletion) is
visible in the very next GET; in memory and in Redis (``DALKIT_REDIS_URL``)."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dalkit import AsyncDatabase
from dalkit.migrations import MigrationFailedError

from .conduit_app import Base, close_database, create_app, create_database
from .conftest import SETTINGS, publish, register


@pytest.fixture(params=["memory", "redis"])
async def cached(
    request: pytest.FixtureRequest, async_db_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncDatabase]]:
    """The API on a database whose cache lives in memory, or in the test Redis."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = dataclasses.replace(SETTINGS, database_url=async_db_url, redis_url=redis_url)
    database, redis = create_database(settings, nplusone="raise")
    try:
        await database.create_all(Base.metadata)
        transport = httpx.ASGITransport(app=create_app(database, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://conduit") as client:
            yield client, database
    finally:
        await close_database(database, redis)


def hits(db: AsyncDatabase) -> int:
    count: int = db.cache.get_stats()["hits"]
    return count


async def get(api: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_tags_and_article_lists_are_served_from_the_cache_on_the_second_call(
    cached: tuple[httpx.AsyncClient, AsyncDatabase],
) -> None:
    api, db = cached
    ann = await register(api, "ann")
    await publish(api, ann, "Cached", ["warm"])
    for path, params in [
        ("/api/tags", {}),
        ("/api/articles", {}),
        ("/api/articles", {"tag": "warm"}),
        ("/api/articles", {"author": "ann", "limit": "5"}),
    ]:
        first = await get(api, path, **params)
        before = hits(db)
        assert await get(api, path, **params) == first
        assert hits(db) > before, f"GET {path} {params} was not served from the cache"


async def test_every_write_is_visible_in_the_very_next_get(
    cached: tuple[httpx.AsyncClient, AsyncDatabase],
) -> None:
    api, db = cached
    ann, bob = await register(api, "ann"), await register(api, "bob")
    first = await publish(api, ann, "First", ["old"])
    for _ in range(2):  # warm: the second round is served from the cache
        assert (await get(api, "/api/tags"))["tags"] == ["old"]
        listed = await get(api, "/api/articles")
        assert [a["slug"] for a in listed["articles"]] == [first["slug"]]
        assert (await get(api, f"/api/articles/{first['slug']}"))["article"]["body"] == (
            "all of First"
        )
    assert hits(db) > 0

    second = await publish(api, bob, "Second", ["new", "old"])  # an article and a new tag
    listed = await get(api, "/api/articles")
    assert [a["slug"] for a in listed["articles"]] == [second["slug"], first["slug"]]
    assert listed["articlesCount"] == 2
    assert sorted((await get(api, "/api/tags"))["tags"]) == ["new", "old"]
    assert (await get(api, "/api/articles", tag="new"))["articlesCount"] == 1

    await api.post(f"/api/articles/{first['slug']}/favorite", headers=bob)
    counts = {a["slug"]: a["favoritesCount"] for a in (await get(api, "/api/articles"))["articles"]}
    assert counts == {first["slug"]: 1, second["slug"]: 0}
    favorited = await get(api, "/api/articles", favorited="bob")
    assert [a["slug"] for a in favorited["articles"]] == [first["slug"]]

    edited = {"article": {"body": "edited"}}
    await api.put(f"/api/articles/{first['slug']}", json=edited, headers=ann)
    assert (await get(api, f"/api/articles/{first['slug']}"))["article"]["body"] == "edited"

    await api.delete(f"/api/articles/{first['slug']}/favorite", headers=bob)
    assert (await get(api, "/api/articles", favorited="bob"))["articlesCount"] == 0
    await api.delete(f"/api/articles/{second['slug']}", headers=bob)
    assert (await get(api, "/api/articles"))["articlesCount"] == 1
    assert (await get(api, "/api/tags"))["tags"] == ["old"]


async def test_the_app_builds_its_own_database_with_the_redis_cache_of_its_settings(
    redis_url: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        SETTINGS, database_url=f"sqlite+aiosqlite:///{tmp_path / 'own.db'}", redis_url=redis_url
    )
    app = create_app(settings=settings)
    db: AsyncDatabase = app.state.db
    assert type(db.cache.backend).__name__ == "AsyncRedisBackend"
    transport = httpx.ASGITransport(app=app)
    # the lifespan migrates the schema, and afterwards disposes and closes Redis
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://conduit") as api:
            for _ in range(2):
                assert await get(api, "/api/tags") == {"tags": []}
        assert db.cache.get_stats()["hits"] == 1


async def test_a_start_up_whose_migration_fails_still_disposes_of_the_database(
    redis_url: str, tmp_path: Path
) -> None:
    # the migration ran before the lifespan's try: its connection stayed pooled, Redis open
    path = tmp_path / "taken.db"
    with contextlib.closing(sqlite3.connect(path)) as taken:  # a table the first revision makes
        taken.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        taken.commit()
    settings = dataclasses.replace(
        SETTINGS, database_url=f"sqlite+aiosqlite:///{path}", redis_url=redis_url
    )
    app = create_app(settings=settings)
    db: AsyncDatabase = app.state.db
    with pytest.raises(MigrationFailedError):
        async with app.router.lifespan_context(app):
            pass
    assert db.pool_stats()["pool_available"] == 0
