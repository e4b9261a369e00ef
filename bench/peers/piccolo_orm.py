"""Piccolo as its documentation shows it: tables bound to a ``PostgresEngine`` with a connection
pool, ``objects().get`` / ``where().order_by().limit()`` / ``objects().create``, and
``Table.insert(*rows)`` in a transaction for loads (in chunks: one INSERT holds 32,767
parameters at most)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from piccolo.columns import Integer, Timestamp, Varchar
from piccolo.engine.postgres import PostgresEngine
from piccolo.table import Table

from bench.peers.base import BULK_TABLE, PAGE_SIZE, TABLE, Row, Target

BULK_CHUNK = 1_000


def _tables(engine: PostgresEngine) -> tuple[Any, Any]:
    class PiccoloItem(Table, tablename=TABLE, db=engine):
        name = Varchar(length=100)
        email = Varchar(length=100)
        category = Integer()
        score = Integer()
        created_at = Timestamp()

    class PiccoloBulkItem(Table, tablename=BULK_TABLE, db=engine):
        name = Varchar(length=100)
        email = Varchar(length=100)
        category = Integer()
        score = Integer()
        created_at = Timestamp()

    return PiccoloItem, PiccoloBulkItem


class PiccoloAsync:
    label = "Piccolo"

    async def setup(self, target: Target, pool_size: int) -> None:
        self.engine = PostgresEngine(
            config={
                "host": target.host,
                "port": target.port,
                "user": target.user,
                "password": target.password,
                "database": target.database,
            }
        )
        self.Item, self.BulkItem = _tables(self.engine)
        await self.engine.start_connection_pool(min_size=pool_size, max_size=pool_size)

    async def get(self, ident: int) -> object:
        item = self.Item
        return await item.objects().get(item.id == ident)

    async def page(self, category: int) -> Sequence[object]:
        item = self.Item
        rows: list[object] = await (
            item.objects()
            .where(item.category == category)
            .order_by(item.created_at, ascending=False)
            .order_by(item.id)
            .limit(PAGE_SIZE)
        )
        return rows

    async def insert(self, row: Row) -> object:
        return await self.Item.objects().create(**row)

    async def bulk(self, rows: Sequence[Row]) -> None:
        table = self.BulkItem
        async with self.engine.transaction():
            for start in range(0, len(rows), BULK_CHUNK):
                chunk = rows[start : start + BULK_CHUNK]
                await table.insert(*(table(**row) for row in chunk))

    async def teardown(self) -> None:
        await self.engine.close_connection_pool()
