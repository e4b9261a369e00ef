"""Concurrent index operations through asyncpg: the build runs outside the transaction and does
not hang (alembic#1460); a build failed by a duplicate leaves no INVALID index, and an INVALID
leftover of an earlier failure is dropped before the retry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase
from dalkit.migrations import Migrations, MigrationSettings
from dalkit.migrations.errors import MigrationFailedError

from .project import write_revision

TABLE = """
op.create_table('accounts', sa.Column('id', sa.BigInteger(), primary_key=True),
                sa.Column('email', sa.Text(), nullable=False))
op.execute("INSERT INTO accounts (id, email) VALUES (1, 'a@x'), (2, 'b@x'), (3, 'a@x')")
"""
UNIQUE_INDEX = (
    "op.create_index_concurrently('ix_accounts_email', 'accounts', ['email'], unique=True)"
)
DROP_INDEX = "op.drop_index_concurrently('ix_accounts_email', table_name='accounts')"

INDEXES = sa.text(
    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = 'ix_accounts_email'"
)


async def _indexes(db: AsyncDatabase) -> list[tuple[str, bool]]:
    async with db.engine.connect() as connection:
        return [(row[0], row[1]) for row in await connection.execute(INDEXES)]


@pytest.fixture
async def asyncpg_db(postgres_database_url: str) -> AsyncDatabase:
    url = make_url(postgres_database_url).set(drivername="postgresql+asyncpg")
    return AsyncDatabase(url)


async def test_a_concurrent_build_through_asyncpg_completes(
    asyncpg_db: AsyncDatabase, directory: Path
) -> None:
    write_revision(directory, "r1", None, TABLE.replace(", (3, 'a@x')", ""))
    write_revision(directory, "r2", "r1", UNIQUE_INDEX, DROP_INDEX)
    migrations = Migrations(asyncpg_db, directory)
    # an idle pooled connection used earlier must not make the build wait
    async with asyncpg_db.engine.connect() as connection:
        await connection.execute(sa.text("SELECT 1"))
    result = await asyncio.wait_for(migrations.upgrade(), timeout=30)
    assert result.applied == ["r1", "r2"]
    assert await _indexes(asyncpg_db) == [("ix_accounts_email", True)]
    await asyncio.wait_for(migrations.downgrade("r1"), timeout=30)
    assert await _indexes(asyncpg_db) == []
    await asyncpg_db.dispose()


async def test_a_build_failed_by_a_duplicate_leaves_no_invalid_index(
    asyncpg_db: AsyncDatabase, directory: Path, postgres_database_url: str
) -> None:
    write_revision(directory, "r1", None, TABLE)
    write_revision(directory, "r2", "r1", UNIQUE_INDEX, DROP_INDEX)
    migrations = Migrations(asyncpg_db, directory)
    await migrations.upgrade("r1")

    with pytest.raises(MigrationFailedError, match="r2"):
        await asyncio.wait_for(migrations.upgrade(), timeout=30)
    assert await _indexes(asyncpg_db) == []
    assert await migrations.current() == ("r1",)

    # an INVALID index left by some earlier failed build (not ours) is dropped before the retry
    with psycopg.connect(postgres_database_url, autocommit=True) as connection:
        with pytest.raises(psycopg.errors.UniqueViolation):
            connection.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY ix_accounts_email ON accounts (email)"
            )
        connection.execute("DELETE FROM accounts WHERE id = 3")
    assert await _indexes(asyncpg_db) == [("ix_accounts_email", False)]

    assert (await asyncio.wait_for(migrations.upgrade(), timeout=30)).applied == ["r2"]
    assert await _indexes(asyncpg_db) == [("ix_accounts_email", True)]
    await asyncpg_db.dispose()


async def test_an_open_transaction_of_the_app_fails_the_build_in_bounded_time(
    asyncpg_db: AsyncDatabase, directory: Path
) -> None:
    # alembic#1460: a transaction left open in the same process makes the build wait for it,
    # forever without lock_timeout; here it times out, is retried, and fails with a clear error
    write_revision(directory, "r1", None, TABLE.replace(", (3, 'a@x')", ""))
    write_revision(directory, "r2", "r1", UNIQUE_INDEX, DROP_INDEX)
    settings = MigrationSettings(
        lock_timeout_ms=200, lock_retries=2, retry_backoff_s=0.05, retry_backoff_max_s=0.1
    )
    migrations = Migrations(asyncpg_db, directory, settings=settings)
    await migrations.upgrade("r1")
    async with asyncpg_db.engine.connect() as idle_in_transaction:
        await idle_in_transaction.execute(sa.text("SELECT count(*) FROM accounts"))
        with pytest.raises(MigrationFailedError, match="lock timeout"):
            await asyncio.wait_for(migrations.upgrade(), timeout=30)
    # the INVALID leftover could not be dropped while the transaction was open; now it is
    assert (await asyncio.wait_for(migrations.upgrade(), timeout=30)).applied == ["r2"]
    assert await _indexes(asyncpg_db) == [("ix_accounts_email", True)]
    await asyncpg_db.dispose()
