"""The query cache and tenant scoping: a read of a tenant-scoped table is cached per tenant, so
no tenant is served another's rows from the same statement (repositories, ``cached()``,
``memoize``); ``every_tenant()`` reads get an entry of their own; outside any tenant the cache
steps aside and the database's scoping refuses the read. This async file is the source of
``test_tenants.py``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncRepository
from dalkit.cache import AsyncQueryCache
from dalkit.query.tenant import TenantRequiredError, every_tenant, tenant

from .tenant_models import Base, Item, items_table


class CachedItems(AsyncRepository[Item]):
    cache_ttl = 60


@pytest.fixture
async def shops(async_db: AsyncDatabase, async_cache: AsyncQueryCache) -> AsyncDatabase:
    """Tenant a: item 1; tenant b: items 2 and 3; the cache installed on the database."""
    await async_db.create_all(Base.metadata)
    with every_tenant():
        async with async_db.transaction() as session:
            for ident, owner in ((1, "a"), (2, "b"), (3, "b")):
                session.add(Item(id=ident, label=f"item {ident}", tenant_id=owner))
    return async_db


async def _reads(db: AsyncDatabase, who: str) -> tuple[list[int], int | None, int]:
    """The item ids a repository lists, the id it gets for key 1, and its count, each in a
    transaction of its own (SQLite's snapshot lets only a transaction's first read be stored)."""
    with tenant(who):
        async with db.transaction() as session:
            listed = [i.id for i in await CachedItems(session).list(sort="id")]
        async with db.transaction() as session:
            one = await CachedItems(session).get_or_none(1)
        async with db.transaction() as session:
            return listed, None if one is None else one.id, await CachedItems(session).count()


async def test_repository_reads_are_cached_per_tenant(
    shops: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    for _ in range(2):
        assert await _reads(shops, "a") == ([1], 1, 1)
        assert await _reads(shops, "b") == ([2, 3], None, 2)
    stats = async_cache.get_stats()
    assert stats["hits"] == 6  # the second round: each tenant's three reads
    with every_tenant():
        async with shops.transaction() as session:
            assert [i.id for i in await CachedItems(session).list(sort="id")] == [1, 2, 3]


async def test_cached_statements_and_memoized_functions_are_per_tenant(
    shops: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    statement = sa.select(items_table().c.id).order_by("id")
    calls: list[str] = []

    @async_cache.memoize(tables=[items_table()])
    async def labels() -> list[str]:
        calls.append("ran")
        async with shops.transaction() as session:
            return list((await session.execute(sa.select(Item.label).order_by(Item.id))).scalars())

    for _ in range(2):
        for who, ids in (("a", [1]), ("b", [2, 3])):
            with tenant(who):
                async with shops.transaction() as session:
                    found = await async_cache.cached(session, statement)
                    assert found.scalars().all() == ids
                assert await labels() == [f"item {i}" for i in ids]
    assert len(calls) == 2  # once per tenant


async def test_outside_any_tenant_the_cache_steps_aside(
    shops: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    assert await _reads(shops, "a") == ([1], 1, 1)
    before = async_cache.get_stats()
    async with shops.transaction() as session:
        with pytest.raises(TenantRequiredError):
            await CachedItems(session).list()
    after = async_cache.get_stats()
    assert after["bypasses"] == before["bypasses"] + 1
    assert after["hits"] == before["hits"]
