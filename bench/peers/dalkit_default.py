"""dalkit the way its README shows it: ``db.session()`` / ``db.transaction()`` around a
repository call, ``list`` with a filter and a sort, ``bulk_insert`` for loads."""

from __future__ import annotations

from collections.abc import Sequence

from bench.peers.base import PAGE_SIZE, Row, Target
from bench.peers.sa_models import BulkItem, Item
from dalkit import AsyncDatabase, AsyncRepository, Database, Repository


class Items(Repository[Item]):
    filterable = ("category",)
    sortable = ("created_at",)


class BulkItems(Repository[BulkItem]):
    pass


class AsyncItems(AsyncRepository[Item]):
    filterable = ("category",)
    sortable = ("created_at",)


class AsyncBulkItems(AsyncRepository[BulkItem]):
    pass


class DalkitSync:
    label = "dalkit default"

    def setup(self, target: Target, pool_size: int) -> None:
        self.db = Database(target.url, pool_size=pool_size, max_overflow=0)

    def get(self, ident: int) -> object:
        with self.db.session() as session:
            return Items(session).get(ident)

    def page(self, category: int) -> Sequence[object]:
        with self.db.session() as session:
            return Items(session).list(category=category, sort="-created_at", limit=PAGE_SIZE)

    def insert(self, row: Row) -> object:
        with self.db.session() as session:
            return Items(session).add(Item(**row))

    def bulk(self, rows: Sequence[Row]) -> None:
        with self.db.session() as session:
            BulkItems(session).bulk_insert(rows)

    def teardown(self) -> None:
        self.db.dispose()


class DalkitAsync:
    label = "dalkit default"

    async def setup(self, target: Target, pool_size: int) -> None:
        self.db = AsyncDatabase(target.url, pool_size=pool_size, max_overflow=0)

    async def get(self, ident: int) -> object:
        async with self.db.transaction() as session:
            return await AsyncItems(session).get(ident)

    async def page(self, category: int) -> Sequence[object]:
        async with self.db.transaction() as session:
            return await AsyncItems(session).list(
                category=category, sort="-created_at", limit=PAGE_SIZE
            )

    async def insert(self, row: Row) -> object:
        async with self.db.transaction() as session:
            return await AsyncItems(session).add(Item(**row))

    async def bulk(self, rows: Sequence[Row]) -> None:
        async with self.db.transaction() as session:
            await AsyncBulkItems(session).bulk_insert(rows)

    async def teardown(self) -> None:
        await self.db.dispose()
