"""A revision whose autocommit block (a concurrent index) committed its earlier steps: a lock
timeout after the block is not retried (a retry would repeat them: "column already exists"),
and the error lists what stays applied; a revision whose committed work is only the concurrent
index, which a new run repeats harmlessly, is still retried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import Database
from dalkit.migrations import Migrations, MigrationSettings
from dalkit.migrations.errors import MigrationFailedError

from .project import lock_held, write_revision

TABLES = """
op.create_table('a', sa.Column('id', sa.BigInteger(), primary_key=True))
op.create_table('b', sa.Column('id', sa.BigInteger(), primary_key=True))
"""
ADD_C1 = "op.add_column('a', sa.Column('c1', sa.Integer()))"
INDEX_C1 = "op.create_index_concurrently('ix_a_c1', 'a', ['c1'])"
ADD_C2 = "op.add_column('b', sa.Column('c2', sa.Integer()))"
SETTINGS = MigrationSettings(
    lock_timeout_ms=100, lock_retries=20, retry_backoff_s=0.05, retry_backoff_max_s=0.2
)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    db = Database(make_url(postgres_database_url).set(drivername="postgresql+psycopg"))
    yield db
    db.dispose()


def _columns(db: Database, table: str) -> list[str]:
    with db.engine.connect() as connection:
        return [column["name"] for column in sa.inspect(connection).get_columns(table)]


def test_a_lock_timeout_after_a_concurrent_index_is_not_retried(
    pg_db: Database, directory: Path, postgres_database_url: str
) -> None:
    write_revision(directory, "r1", None, TABLES)
    write_revision(directory, "r2", "r1", "\n".join((ADD_C1, INDEX_C1, ADD_C2)))
    migrations = Migrations(pg_db, directory, settings=SETTINGS)
    migrations.upgrade("r1")
    with psycopg.connect(postgres_database_url) as blocker:
        blocker.execute("LOCK TABLE b IN ACCESS SHARE MODE")  # held past every retry
        with pytest.raises(MigrationFailedError) as failed:
            migrations.upgrade()
        blocker.rollback()

    error = failed.value
    message = str(error)
    assert "already exists" not in message  # what the retry used to fail with
    assert "lock timeout" in message
    assert "not retried" in message
    assert error.revision == "r2"
    assert not error.restored
    assert error.committed == [
        "ALTER TABLE a ADD COLUMN c1 INTEGER",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_a_c1 ON a (c1)",
    ]
    assert "stay applied while the revision is not recorded" in message
    assert "ALTER TABLE a ADD COLUMN c1 INTEGER" in message
    assert "undo them by hand" in message
    assert migrations.current() == ("r1",)
    assert _columns(pg_db, "a") == ["id", "c1"]
    assert _columns(pg_db, "b") == ["id"]


def test_a_failure_after_the_block_says_what_stays_applied(
    pg_db: Database, directory: Path
) -> None:
    write_revision(directory, "r1", None, TABLES)
    failing = "op.execute('INSERT INTO no_such_table VALUES (1)')"
    write_revision(directory, "r2", "r1", "\n".join((ADD_C1, INDEX_C1, failing)))
    migrations = Migrations(pg_db, directory, settings=SETTINGS)
    with pytest.raises(MigrationFailedError) as failed:
        migrations.upgrade()
    assert "stay applied while the revision is not recorded" in str(failed.value)
    assert failed.value.committed[0] == "ALTER TABLE a ADD COLUMN c1 INTEGER"
    assert "no backup was taken" in str(failed.value)

    # a failure with nothing committed says it was rolled back
    write_revision(directory, "r2", "r1", "\n".join((ADD_C2, failing)))
    with pytest.raises(MigrationFailedError) as clean:
        Migrations(pg_db, directory, settings=SETTINGS).upgrade()
    assert clean.value.committed == []
    assert "it was rolled back" in str(clean.value)


@pytest.mark.slow
def test_a_revision_that_committed_only_its_concurrent_index_is_retried(
    pg_db: Database, directory: Path, postgres_database_url: str
) -> None:
    write_revision(directory, "r1", None, TABLES + ADD_C1)
    write_revision(directory, "r2", "r1", "\n".join((INDEX_C1, ADD_C2)))
    migrations = Migrations(pg_db, directory, settings=SETTINGS)
    migrations.upgrade("r1")
    with lock_held(postgres_database_url, "LOCK TABLE b IN ACCESS SHARE MODE"):
        assert migrations.upgrade().applied == ["r2"]
    assert _columns(pg_db, "b") == ["id", "c2"]
    assert migrations.current() == ("r2",)
