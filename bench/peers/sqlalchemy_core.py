"""SQLAlchemy Core with statements built once and reused (the compiled cache then skips the
compiler): ``engine.connect()`` for reads, ``engine.begin()`` for the insert."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.peers.base import PAGE_SIZE, TABLE, Row, Target
from bench.peers.sa_models import Base

_items = Base.metadata.tables[TABLE]
GET = sa.select(_items).where(_items.c.id == sa.bindparam("id"))
PAGE = (
    sa.select(_items)
    .where(_items.c.category == sa.bindparam("category"))
    .order_by(_items.c.created_at.desc(), _items.c.id)
    .limit(PAGE_SIZE)
)
INSERT = sa.insert(_items).returning(_items.c.id)


class SqlAlchemyCoreSync:
    label = "SQLAlchemy Core"

    def setup(self, target: Target, pool_size: int) -> None:
        self.engine = sa.create_engine(
            target.sqlalchemy_url("psycopg"), pool_size=pool_size, max_overflow=0
        )

    def get(self, ident: int) -> object:
        with self.engine.connect() as connection:
            return connection.execute(GET, {"id": ident}).one()

    def page(self, category: int) -> Sequence[object]:
        with self.engine.connect() as connection:
            return connection.execute(PAGE, {"category": category}).all()

    def insert(self, row: Row) -> object:
        with self.engine.begin() as connection:
            return connection.execute(INSERT, row).scalar_one()

    def teardown(self) -> None:
        self.engine.dispose()


class SqlAlchemyCoreAsync:
    label = "SQLAlchemy Core"

    async def setup(self, target: Target, pool_size: int) -> None:
        self.engine = create_async_engine(
            target.sqlalchemy_url("asyncpg"), pool_size=pool_size, max_overflow=0
        )

    async def get(self, ident: int) -> object:
        async with self.engine.connect() as connection:
            return (await connection.execute(GET, {"id": ident})).one()

    async def page(self, category: int) -> Sequence[object]:
        async with self.engine.connect() as connection:
            return (await connection.execute(PAGE, {"category": category})).all()

    async def insert(self, row: Row) -> object:
        async with self.engine.begin() as connection:
            return (await connection.execute(INSERT, row)).scalar_one()

    async def teardown(self) -> None:
        await self.engine.dispose()
