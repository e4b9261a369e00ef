"""advanced-alchemy as its documentation shows it: an ``SQLAlchemyAsyncConfig``, a session from
``config.get_session()`` per request and an ``SQLAlchemyAsyncRepository``: ``get``, ``list`` with
a filter, ``OrderBy`` and ``LimitOffset``, ``add`` / ``add_many`` with ``auto_commit``."""

from __future__ import annotations

from collections.abc import Sequence

from advanced_alchemy.config import AsyncSessionConfig, EngineConfig, SQLAlchemyAsyncConfig
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository

from bench.peers.base import PAGE_SIZE, Row, Target
from bench.peers.sa_models import BulkItem, Item


class ItemRepository(SQLAlchemyAsyncRepository[Item]):
    model_type = Item


class BulkItemRepository(SQLAlchemyAsyncRepository[BulkItem]):
    model_type = BulkItem


class AdvancedAlchemyAsync:
    label = "advanced-alchemy"

    async def setup(self, target: Target, pool_size: int) -> None:
        self.config = SQLAlchemyAsyncConfig(
            connection_string=target.sqlalchemy_url("asyncpg"),
            engine_config=EngineConfig(pool_size=pool_size, max_overflow=0),
            session_config=AsyncSessionConfig(expire_on_commit=False),
        )

    async def get(self, ident: int) -> object:
        async with self.config.get_session() as session:
            return await ItemRepository(session=session).get(ident)

    async def page(self, category: int) -> Sequence[object]:
        async with self.config.get_session() as session:
            return await ItemRepository(session=session).list(
                Item.category == category,
                OrderBy(field_name="created_at", sort_order="desc"),
                OrderBy(field_name="id", sort_order="asc"),
                LimitOffset(limit=PAGE_SIZE, offset=0),
            )

    async def insert(self, row: Row) -> object:
        async with self.config.get_session() as session:
            return await ItemRepository(session=session).add(Item(**row), auto_commit=True)

    async def bulk(self, rows: Sequence[Row]) -> None:
        async with self.config.get_session() as session:
            await BulkItemRepository(session=session).add_many(
                [BulkItem(**row) for row in rows], auto_commit=True
            )

    async def teardown(self) -> None:
        await self.config.get_engine().dispose()
