"""N+1 detection under the async API: the same listeners, through SQLAlchemy's greenlet bridge."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from dalkit import AsyncDatabase
from dalkit.observe import NPlusOneError, Observer, install
from dalkit.repository.reads_async import IN_CHUNK

from .models import AsyncPosts, Author, Post


def _line_of(marker: str) -> int:
    with open(__file__) as source:
        return next(n for n, line in enumerate(source, 1) if marker in line)


async def test_awaitable_attrs_in_a_loop_is_caught_with_the_test_line(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        posts = await AsyncPosts(session).list()
        with pytest.raises(NPlusOneError) as caught:
            for post in posts:
                await post.awaitable_attrs.author  # the async N+1 line
    assert "Post.author lazily loaded for 2 Post instances" in str(caught.value)
    assert f"test_nplusone_asyncio.py:{_line_of('# the async N+1 line')}" in str(caught.value)


async def test_touching_an_unloaded_relationship_says_what_to_load(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        (post, *_) = await AsyncPosts(session).list()
        with pytest.raises(NPlusOneError, match=r'Post\.author is not loaded.*load=\["author"\]'):
            _ = post.author


async def test_an_unloaded_relationship_says_what_to_load_with_detection_off(
    seeded_async_db: AsyncDatabase,
) -> None:
    # not the driver's MissingGreenlet (aiosqlite: also a never-awaited coroutine warning)
    install(seeded_async_db.engine, {"nplusone": "off"})
    async with seeded_async_db.session() as session:
        (post, *_) = await AsyncPosts(session).list()
        with pytest.raises(NPlusOneError, match=r'load=\["author"\].*awaitable_attrs\.author'):
            _ = post.author
        assert (await post.awaitable_attrs.author).name  # the session is still usable


async def test_an_expired_attribute_says_to_refresh_it(seeded_async_db: AsyncDatabase) -> None:
    # not the driver's MissingGreenlet (aiosqlite: also a never-awaited coroutine warning)
    install(seeded_async_db.engine, {"nplusone": "off"})
    async with seeded_async_db.session() as session:
        (post, *_) = await AsyncPosts(session).list()
        session.expire(post, ["title"])
        with pytest.raises(NPlusOneError, match=r"Post\.title is not loaded.*session\.refresh"):
            _ = post.title
        await session.refresh(post)
        assert post.title == "post 0.0"


async def test_async_eager_loads_are_never_caught(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        for post in await AsyncPosts(session).list(load=["author"]):
            _ = post.author.name
        result = await session.scalars(sa.select(Author).options(selectinload(Author.posts)))
        for author in result:
            _ = [p.title for p in author.posts]
    assert async_observer.nplusone.detections == 0


async def test_an_async_loop_of_gets_is_caught_by_shape(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        with pytest.raises(NPlusOneError, match="ran 10 times"):
            for ident in range(1, 51):
                session.expunge_all()
                await session.get(Post, ident)


async def test_an_async_get_many_of_many_chunks_is_one_read(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        found = await AsyncPosts(session).get_many(range(1, 10 * IN_CHUNK + 1))
    assert len(found) == 10


async def test_an_async_eager_load_of_many_parents_is_never_caught(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        session.add_all(Author(name=f"extra {n}") for n in range(10 * 500))
    async with seeded_async_db.session() as session:
        query = sa.select(Author).options(selectinload(Author.posts))
        authors = (await session.scalars(query)).all()
        assert sum(len(author.posts) for author in authors) == 10
