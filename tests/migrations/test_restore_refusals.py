"""A restore checks its file before anything changes, and on PostgreSQL empties and restores in
one transaction: a file that is not a backup (or a truncated dump) is refused as bad input with
the database untouched, and a restore failing part-way is rolled back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from dalkit import Database
from dalkit.cli._app import app
from dalkit.migrations import BackupError, Migrations, MigrationSettings

from .project import write_revision

ITEMS = """
op.create_table('items', sa.Column('id', sa.BigInteger(), primary_key=True))
op.execute("INSERT INTO items (id) VALUES (1), (2), (3)")
"""
EXTRA = "op.create_table('extra', sa.Column('id', sa.BigInteger(), primary_key=True))"


def _state(db: Database) -> tuple[list[str], int]:
    with db.engine.connect() as connection:
        tables = sorted(sa.inspect(connection).get_table_names())
        count = connection.execute(sa.text("SELECT count(*) FROM items")).scalar_one()
    return tables, count


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    db = Database(make_url(postgres_database_url).set(drivername="postgresql+psycopg"))
    yield db
    db.dispose()


def _backed_up(db: Database, directory: Path, tmp_path: Path) -> tuple[Migrations[Database], Path]:
    """items at r1, a backup of that, then r2 (the extra table) applied."""
    write_revision(directory, "r1", None, ITEMS, "op.drop_table('items')")
    write_revision(directory, "r2", "r1", EXTRA, "op.drop_table('extra')")
    migrations = Migrations(db, directory, settings=MigrationSettings(backup_dir=tmp_path / "b"))
    migrations.upgrade("r1")
    result = migrations.upgrade(backup=True)
    assert result.backup is not None
    return migrations, result.backup


def test_a_file_that_is_not_a_backup_changes_nothing(
    db: Database, directory: Path, tmp_path: Path
) -> None:
    migrations, _ = _backed_up(db, directory, tmp_path)
    before = _state(db)
    wrong = tmp_path / "notes.txt"
    wrong.write_text("not a backup\n" * 100)
    with pytest.raises(BackupError) as refused:
        migrations.restore(wrong)
    assert _state(db) == before == (["alembic_version", "extra", "items"], 3)
    assert "nothing was changed" in str(refused.value)
    assert refused.value.bad_input
    assert migrations.current() == ("r2",)


def test_a_truncated_dump_changes_nothing(pg_db: Database, directory: Path, tmp_path: Path) -> None:
    migrations, backup = _backed_up(pg_db, directory, tmp_path)
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size - 200])
    with pytest.raises(BackupError) as refused:
        migrations.restore(truncated)
    assert _state(pg_db) == (["alembic_version", "extra", "items"], 3)
    assert "nothing was changed" in str(refused.value)
    migrations.restore(backup)  # the whole file still works
    assert _state(pg_db) == (["alembic_version", "items"], 3)


def test_a_restore_failing_part_way_is_rolled_back(
    pg_db: Database, directory: Path, tmp_path: Path, postgres_database_url: str
) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_database_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role}")
        write_revision(directory, "r1", None, ITEMS, "op.drop_table('items')")
        write_revision(directory, "r2", "r1", EXTRA, "op.drop_table('extra')")
        settings = MigrationSettings(backup_dir=tmp_path / "b")
        migrations = Migrations(pg_db, directory, settings=settings)
        migrations.upgrade("r1")
        admin.execute(f"GRANT SELECT ON items TO {role}")
        backup = migrations.upgrade(backup=True).backup
        assert backup is not None
        # the dump's GRANT, after the drops and the data, now names a role that is gone
        admin.execute(f"REVOKE SELECT ON items FROM {role}")
        admin.execute(f"DROP ROLE {role}")
    with pytest.raises(BackupError) as failed:
        migrations.restore(backup)
    assert _state(pg_db) == (["alembic_version", "extra", "items"], 3)
    assert migrations.current() == ("r2",)
    assert "rolled back" in str(failed.value)
    assert role in str(failed.value)


def test_the_command_line_refuses_a_wrong_file_as_bad_input(
    postgres_database_url: str, pg_db: Database, directory: Path, tmp_path: Path
) -> None:
    migrations, _ = _backed_up(pg_db, directory, tmp_path)
    wrong = tmp_path / "app.sqlite3"
    wrong.write_bytes(b"SQLite format 3\x00" + bytes(4080))
    url = make_url(postgres_database_url)
    full_url = url.render_as_string(hide_password=False)
    arguments = ["migrate", "restore", str(wrong), "--yes", "-d", str(directory)]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*arguments, "--url", full_url])
    assert _state(pg_db) == (["alembic_version", "extra", "items"], 3)
    assert result.exit_code == 2, result.output
    assert "nothing was changed" in result.output
    assert url.password
    assert url.password not in result.output
    assert migrations.current() == ("r2",)
