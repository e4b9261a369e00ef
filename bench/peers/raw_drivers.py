"""The raw drivers, the floor everything else stands on: one autocommit psycopg connection
(binary COPY for loads) and an asyncpg pool (``copy_records_to_table`` for loads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg

from bench.peers.base import BULK_TABLE, COLUMNS, PAGE_SIZE, TABLE, Row, Target

_FIELDS = ", ".join(COLUMNS)
_INSERTED = ", ".join(COLUMNS[1:])
GET = f"SELECT {_FIELDS} FROM {TABLE} WHERE id = %s"
PAGE = (
    f"SELECT {_FIELDS} FROM {TABLE} WHERE category = %s "
    f"ORDER BY created_at DESC, id LIMIT {PAGE_SIZE}"
)
INSERT = f"INSERT INTO {TABLE} ({_INSERTED}) VALUES (%s, %s, %s, %s, %s) RETURNING id"
COPY_TYPES = ["int4", "varchar", "varchar", "int4", "int4", "timestamp"]


def _dollar(sql: str) -> str:
    """psycopg's ``%s`` placeholders as asyncpg's ``$1, $2, ...``."""
    parts = sql.split("%s")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


A_GET, A_PAGE, A_INSERT = _dollar(GET), _dollar(PAGE), _dollar(INSERT)


class PsycopgSync:
    label = "psycopg (raw)"

    def setup(self, target: Target, pool_size: int) -> None:
        self.connection = psycopg.connect(target.conninfo(), autocommit=True)
        self.target = target

    def get(self, ident: int) -> object:
        return self.connection.execute(GET, (ident,)).fetchone()

    def page(self, category: int) -> Sequence[object]:
        return self.connection.execute(PAGE, (category,)).fetchall()

    def insert(self, row: Row) -> object:
        values = tuple(row[name] for name in COLUMNS[1:])
        return self.connection.execute(INSERT, values).fetchone()

    def bulk(self, rows: Sequence[Row]) -> None:
        # a load is one transaction on a connection of its own, like every other loader's
        with psycopg.connect(self.target.conninfo()) as connection, connection.cursor() as cur:
            with cur.copy(f"COPY {BULK_TABLE} ({_FIELDS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(tuple(row[name] for name in COLUMNS))

    def teardown(self) -> None:
        self.connection.close()


class AsyncpgPool:
    label = "asyncpg pool (raw)"

    async def setup(self, target: Target, pool_size: int) -> None:
        self.pool: Any = await asyncpg.create_pool(
            target.conninfo(), min_size=pool_size, max_size=pool_size
        )

    async def get(self, ident: int) -> object:
        return await self.pool.fetchrow(A_GET, ident)

    async def page(self, category: int) -> Sequence[object]:
        rows: list[object] = await self.pool.fetch(A_PAGE, category)
        return rows

    async def insert(self, row: Row) -> object:
        values = [row[name] for name in COLUMNS[1:]]
        return await self.pool.fetchval(A_INSERT, *values)

    async def insert_in_transaction(self, row: Row) -> object:
        """The insert as a write transaction must send it (issue 10: BEGIN, the statement,
        COMMIT), with nothing of a library around: the floor of every transactional insert."""
        values = [row[name] for name in COLUMNS[1:]]
        async with self.pool.acquire() as connection, connection.transaction():
            return await connection.fetchval(A_INSERT, *values)

    async def bulk(self, rows: Sequence[Row]) -> None:
        records = [tuple(row[name] for name in COLUMNS) for row in rows]
        async with self.pool.acquire() as connection:
            await connection.copy_records_to_table(
                BULK_TABLE, records=records, columns=list(COLUMNS)
            )

    async def teardown(self) -> None:
        await self.pool.close()
