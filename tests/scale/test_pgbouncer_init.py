"""The init hook behind PgBouncer: session state it sets is refused, client-side codecs work."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from psycopg.types import TypeInfo
from sqlalchemy import text

from dalkit import AsyncDatabase, Database
from dalkit.engine.pgbouncer import PgBouncerError


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://")


def test_a_sync_init_hook_setting_session_state_is_refused(pgbouncer_database_url: str) -> None:
    def set_path(connection: Any) -> None:
        connection.execute("SET search_path TO private_schema, public")
        connection.commit()

    with Database(_psycopg(pgbouncer_database_url), pgbouncer=True, init=set_path) as db:
        with pytest.raises(PgBouncerError, match=r"ran SET search_path \.\.\.: session state"):
            with db.transaction() as session:
                session.execute(text("SELECT 1"))


def test_an_async_init_hook_setting_session_state_is_refused(pgbouncer_database_url: str) -> None:
    async def set_zone(connection: Any) -> None:
        await connection.execute("SELECT 1; SET TIME ZONE 'UTC'")

    async def use() -> None:
        db = AsyncDatabase(_asyncpg(pgbouncer_database_url), pgbouncer=True, init=set_zone)
        try:
            async with db.transaction() as session:
                await session.execute(text("SELECT 1"))
        finally:
            await db.dispose()

    with pytest.raises(PgBouncerError, match=r"ran SET TIME \.\.\.: session state"):
        asyncio.run(use())


def test_init_hooks_registering_client_side_codecs_still_work(pgbouncer_database_url: str) -> None:
    def register(connection: Any) -> None:
        info = TypeInfo.fetch(connection, "int4")  # a catalogue query, then client-side only
        assert info is not None
        connection.execute("SET LOCAL statement_timeout = '5s'")  # lasts its transaction only
        connection.rollback()

    with Database(_psycopg(pgbouncer_database_url), pgbouncer=True, init=register) as db:
        with db.transaction() as session:
            assert session.execute(text("SELECT 41 + 1")).scalar_one() == 42

    async def register_json(connection: Any) -> None:
        await connection.set_type_codec(
            "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )

    async def use() -> Any:
        db = AsyncDatabase(_asyncpg(pgbouncer_database_url), pgbouncer=True, init=register_json)
        try:
            async with db.transaction() as session:
                return (await session.execute(text("""SELECT '{"a": 1}'::json"""))).scalar_one()
        finally:
            await db.dispose()

    assert asyncio.run(use()) == {"a": 1}
