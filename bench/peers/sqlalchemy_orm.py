"""SQLAlchemy ORM as its documentation shows it: a sessionmaker, ``with Session.begin()`` per
request, ``session.get`` / ``session.scalars(select(...))``, and an ORM bulk INSERT for loads.
``expire_on_commit=False`` (as the asyncio docs advise) lets a request use what it read after
the commit, as dalkit's sessions do; with the default, reading an attribute would raise."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from bench.peers.base import Row, Target
from bench.peers.sa_models import BulkItem, Item, page_statement


class SqlAlchemyOrmSync:
    label = "SQLAlchemy ORM"

    def setup(self, target: Target, pool_size: int) -> None:
        self.engine = sa.create_engine(
            target.sqlalchemy_url("psycopg"), pool_size=pool_size, max_overflow=0
        )
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    def get(self, ident: int) -> object:
        with self.Session.begin() as session:
            return session.get(Item, ident)

    def page(self, category: int) -> Sequence[object]:
        with self.Session.begin() as session:
            return session.scalars(page_statement(category)).all()

    def insert(self, row: Row) -> object:
        with self.Session.begin() as session:
            item = Item(**row)
            session.add(item)
        return item

    def bulk(self, rows: Sequence[Row]) -> None:
        with self.Session.begin() as session:
            session.execute(sa.insert(BulkItem), list(rows))

    def teardown(self) -> None:
        self.engine.dispose()


class SqlAlchemyOrmAsync:
    label = "SQLAlchemy ORM"

    async def setup(self, target: Target, pool_size: int) -> None:
        self.engine = create_async_engine(
            target.sqlalchemy_url("asyncpg"), pool_size=pool_size, max_overflow=0
        )
        self.Session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def get(self, ident: int) -> object:
        async with self.Session.begin() as session:
            return await session.get(Item, ident)

    async def page(self, category: int) -> Sequence[object]:
        async with self.Session.begin() as session:
            return (await session.scalars(page_statement(category))).all()

    async def insert(self, row: Row) -> object:
        async with self.Session.begin() as session:
            item = Item(**row)
            session.add(item)
        return item

    async def bulk(self, rows: Sequence[Row]) -> None:
        async with self.Session.begin() as session:
            await session.execute(sa.insert(BulkItem), list(rows))

    async def teardown(self) -> None:
        await self.engine.dispose()
