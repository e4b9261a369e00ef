"""Tortoise ORM as its documentation shows it: models in a module given to ``Tortoise.init``
(asyncpg backend, naive datetimes), ``Model.get`` / ``filter`` / ``create`` / ``bulk_create``."""

from __future__ import annotations

from collections.abc import Sequence

from tortoise import Tortoise, fields
from tortoise.models import Model

from bench.peers.base import BULK_TABLE, PAGE_SIZE, TABLE, Row, Target


class TortoiseItem(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=100)
    category = fields.IntField()
    score = fields.IntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = TABLE


class TortoiseBulkItem(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=100)
    category = fields.IntField()
    score = fields.IntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = BULK_TABLE


class TortoiseAsync:
    label = "Tortoise"

    async def setup(self, target: Target, pool_size: int) -> None:
        credentials = {
            "host": target.host,
            "port": target.port,
            "user": target.user,
            "password": target.password,
            "database": target.database,
            "minsize": pool_size,
            "maxsize": pool_size,
        }
        await Tortoise.init(
            config={
                "connections": {
                    "default": {"engine": "tortoise.backends.asyncpg", "credentials": credentials}
                },
                "apps": {"peers": {"models": [__name__], "default_connection": "default"}},
                "use_tz": False,
            }
        )

    async def get(self, ident: int) -> object:
        return await TortoiseItem.get(id=ident)

    async def page(self, category: int) -> Sequence[object]:
        return (
            await TortoiseItem.filter(category=category)
            .order_by("-created_at", "id")
            .limit(PAGE_SIZE)
        )

    async def insert(self, row: Row) -> object:
        return await TortoiseItem.create(**row)

    async def bulk(self, rows: Sequence[Row]) -> None:
        await TortoiseBulkItem.bulk_create([TortoiseBulkItem(**row) for row in rows])

    async def teardown(self) -> None:
        await Tortoise.close_connections()
