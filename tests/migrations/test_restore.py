"""A revision that fails part-way leaves schema and data exactly as before the run, on SQLite and
PostgreSQL (a concurrent index built outside the transaction included), compared by dumps."""

from __future__ import annotations

import difflib
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from dalkit import Database
from dalkit.migrations import BackupError, Migrations, MigrationSettings
from dalkit.migrations.errors import MigrationFailedError

from .project import write_revision

CREATE = """
op.create_table('items', sa.Column('id', sa.BigInteger(), primary_key=True),
                sa.Column('name', sa.String(50), nullable=False))
op.execute("INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two')")
"""
ADD_PRICE = """
op.add_column('items', sa.Column('price', sa.Integer(), server_default='0', nullable=False))
op.execute("UPDATE items SET name = name || '!'")
"""
FAIL_PART_WAY = """
op.create_index_concurrently('ix_items_name', 'items', ['name'])
op.create_table('extra', sa.Column('id', sa.BigInteger(), primary_key=True))
op.execute("INSERT INTO items (id, name) VALUES (3, 'three')")
op.execute("INSERT INTO no_such_table VALUES (1)")
"""


def _dump(db: Database) -> list[str]:
    url = db.engine.url
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(str(url.database)) as connection:
            return list(connection.iterdump())
    plain = make_url(url).set(drivername="postgresql")
    result = subprocess.run(
        ["pg_dump", "--no-owner", "--dbname", plain.render_as_string(hide_password=False)],
        capture_output=True,
        text=True,
        check=True,
    )
    # \\restrict lines carry a random key per run
    return [line for line in result.stdout.splitlines() if not line.startswith("\\")]


@pytest.mark.slow
def test_a_failed_run_is_restored_to_exactly_the_state_before_it(
    db: Database, directory: Path, tmp_path: Path
) -> None:
    write_revision(directory, "r1", None, CREATE, "op.drop_table('items')")
    settings = MigrationSettings(backup_dir=tmp_path / "backups")
    migrations = Migrations(db, directory, settings=settings)
    migrations.upgrade()
    write_revision(directory, "r2", "r1", ADD_PRICE, "op.drop_column('items', 'price')")
    write_revision(directory, "r3", "r2", FAIL_PART_WAY)
    before = _dump(db)

    with pytest.raises(MigrationFailedError) as failed:
        migrations.upgrade(backup=True, allow_unsafe=True)

    error = failed.value
    assert error.revision == "r3"
    assert error.restored
    assert error.backup is not None
    assert error.backup.parent == tmp_path / "backups"
    assert "revision r3 failed" in str(error)
    assert "restored" in str(error)
    assert migrations.current() == ("r1",)
    after = _dump(db)
    assert after == before, "\n".join(difflib.unified_diff(before, after, lineterm=""))


def test_restore_on_request_brings_back_a_backup(
    db: Database, directory: Path, tmp_path: Path
) -> None:
    write_revision(directory, "r1", None, CREATE, "op.drop_table('items')")
    write_revision(directory, "r2", "r1", ADD_PRICE, "op.drop_column('items', 'price')")
    migrations = Migrations(db, directory, settings=MigrationSettings(backup_dir=tmp_path))
    migrations.upgrade("r1")
    before = _dump(db)
    result = migrations.upgrade(backup=True)
    assert result.applied == ["r2"]
    assert result.backup is not None
    assert _dump(db) != before
    migrations.restore(result.backup)
    assert _dump(db) == before
    assert migrations.current() == ("r1",)


@pytest.mark.postgres
def test_a_password_given_in_the_url_s_query_reaches_the_backup_tools(
    postgres_database_url: str, directory: Path, tmp_path: Path
) -> None:
    # the config moves ?password=... to the connect arguments (no URL shows it): pg_dump,
    # pg_restore and psql were started without it, and each backup failed (no password supplied)
    server = make_url(postgres_database_url)
    url = (
        f"postgresql://{server.username}@{server.host}:{server.port}/{server.database}"
        f"?password={quote(str(server.password), safe='')}"
    )
    write_revision(directory, "r1", None, CREATE, "op.drop_table('items')")
    write_revision(directory, "r2", "r1", ADD_PRICE, "op.drop_column('items', 'price')")
    write_revision(directory, "r3", "r2", FAIL_PART_WAY)
    with Database(url) as db:
        assert db.engine.url.password is None
        migrations = Migrations(db, directory, settings=MigrationSettings(backup_dir=tmp_path))
        assert migrations.upgrade("r1", backup=True).backup is not None
        with pytest.raises(MigrationFailedError) as failed:  # r2 runs, r3 fails: restored
            migrations.upgrade(backup=True, allow_unsafe=True)
        assert failed.value.restored
        assert migrations.current() == ("r1",)


def test_without_pg_dump_a_backup_is_refused(
    postgres_database_url: str, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_revision(directory, "r1", None, CREATE, "op.drop_table('items')")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("dalkit.migrations.backup._FALLBACK_DIRS", ())
    db = Database(make_url(postgres_database_url).set(drivername="postgresql+psycopg"))
    try:
        migrations = Migrations(db, directory)
        with pytest.raises(BackupError, match="pg_dump was not found"):
            migrations.upgrade(backup=True)
        assert migrations.current() == ()
        assert migrations.upgrade(backup=False).applied == ["r1"]
    finally:
        db.dispose()


def test_an_in_memory_sqlite_database_cannot_be_backed_up(directory: Path) -> None:
    write_revision(directory, "r1", None, CREATE, "op.drop_table('items')")
    db = Database("sqlite://")
    try:
        with pytest.raises(BackupError, match="in-memory"):
            Migrations(db, directory).upgrade(backup=True)
    finally:
        db.dispose()


async def test_an_async_engine_restores_too(
    postgres_database_url: str, directory: Path, tmp_path: Path
) -> None:
    from dalkit import AsyncDatabase

    write_revision(directory, "r1", None, CREATE, "op.drop_table('items')")
    write_revision(directory, "r2", "r1", ADD_PRICE, "op.drop_column('items', 'price')")
    write_revision(directory, "r3", "r2", FAIL_PART_WAY)
    db = AsyncDatabase(make_url(postgres_database_url).set(drivername="postgresql+asyncpg"))
    sync_view = Database(make_url(postgres_database_url).set(drivername="postgresql+psycopg"))
    try:
        migrations = Migrations(db, directory, settings=MigrationSettings(backup_dir=tmp_path))
        await migrations.upgrade("r1")
        before = _dump(sync_view)
        with pytest.raises(MigrationFailedError) as failed:
            await migrations.upgrade(backup=True, allow_unsafe=True)
        assert failed.value.restored
        assert await migrations.current() == ("r1",)
        assert _dump(sync_view) == before
    finally:
        await db.dispose()
        sync_view.dispose()
