"""The whole API on a small project, on SQLite and PostgreSQL, through sync and async engines:
init, autogenerate, pending, up, current, history, drift (enum values included), a .sql
revision in the same history, and down to base."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.migrations import Migrations, MigrationSettings, SchemaDriftError

from .project import models, write_revision

NOTES_SQL = "CREATE TABLE notes (id bigint NOT NULL PRIMARY KEY, body text);"


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def test_the_whole_api_on_a_small_project(db: Database, directory: Path) -> None:
    first = Migrations(db, directory, models(1))
    first.init()
    created = first.revision("create users")
    text = created.path.read_text()
    assert "op.create_table('users'" in text
    assert "dalkit_outbox" in text  # dalkit's own tables are in the target metadata
    assert [info.revision for info in first.pending()] == [created.revision]
    assert first.current() == ()

    applied = first.upgrade()
    assert applied.applied == [created.revision]
    assert first.current() == (created.revision,)
    assert first.pending() == []
    first.check()

    notes = first.new_sql_revision("notes table", NOTES_SQL, "DROP TABLE notes;")
    assert first.upgrade().applied == [notes.revision]

    second = Migrations(db, directory, models(2))
    with pytest.raises(SchemaDriftError) as drift:
        second.check()
    differences = "\n".join(drift.value.differences)
    assert "users.name" in differences
    assert "ix_users_email" in differences
    if db.engine.dialect.name == "postgresql":
        assert "enum type mood" in differences
        assert "meh" in differences

    changed = second.revision("name, email index, a mood")
    body = changed.path.read_text()
    assert "op.create_index_concurrently('ix_users_email', 'users'" in body
    assert "op.drop_index_concurrently('ix_users_email'" in body
    if db.engine.dialect.name == "postgresql":
        assert "ADD VALUE IF NOT EXISTS 'meh'" in body
    assert [f for f in changed.findings if f.blocks] == []
    assert second.upgrade().applied == [changed.revision]
    second.check()

    history = second.history()
    assert [info.kind for info in history] == ["python", "sql", "python"]
    assert [info.revision for info in history] == [
        created.revision,
        notes.revision,
        changed.revision,
    ]
    assert history[-1].is_head

    assert second.downgrade("-1").applied == [changed.revision]
    assert second.current() == (notes.revision,)
    second.downgrade("base")
    assert second.current() == ()
    assert _tables(db) == {"alembic_version"}


async def test_the_whole_api_through_an_async_engine(
    async_db: AsyncDatabase, directory: Path
) -> None:
    first = Migrations(async_db, directory, models(1))
    first.init()
    created = await first.revision("create users")
    assert [info.revision for info in await first.pending()] == [created.revision]
    assert (await first.upgrade()).applied == [created.revision]
    assert await first.current() == (created.revision,)
    await first.check()

    notes = first.new_sql_revision("notes table", NOTES_SQL, "DROP TABLE notes;")
    await first.upgrade()
    second = Migrations(async_db, directory, models(2))
    with pytest.raises(SchemaDriftError) as drift:
        await second.check()
    assert any("users.name" in d for d in drift.value.differences)

    changed = await second.revision("name, email index, a mood")
    assert "create_index_concurrently" in changed.path.read_text()
    # on asyncpg this builds the index CONCURRENTLY outside the transaction: no hang
    assert (await second.upgrade()).applied == [changed.revision]
    await second.check()
    assert [info.kind for info in second.history()] == ["python", "sql", "python"]

    await second.downgrade(notes.revision)
    assert await second.current() == (notes.revision,)
    await second.downgrade("base")
    assert await second.current() == ()


def test_offline_sql_covers_up_and_down(directory: Path, sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        migrations = Migrations(db, directory, models(1))
        migrations.init()
        created = migrations.revision("create users", autogenerate=False)
        notes = migrations.new_sql_revision("notes", NOTES_SQL, "DROP TABLE notes;")
        up = migrations.sql("base:head", dialect="postgresql")
        assert "CREATE TABLE alembic_version" in up
        assert "CREATE TABLE notes" in up
        assert f"UPDATE alembic_version SET version_num='{notes.revision}'" in up
        down = migrations.sql(f"head:{created.revision}", dialect="postgresql")
        assert "DROP TABLE notes" in down
        assert migrations.current() == ()  # nothing touched the database
    finally:
        db.dispose()


def test_offline_sql_for_postgresql_runs_under_the_timeouts_upgrade_sets(
    directory: Path, sqlite_url: str
) -> None:
    db = Database(sqlite_url)
    try:
        settings = MigrationSettings(lock_timeout_ms=1_234, statement_timeout_ms=None)
        migrations = Migrations(db, directory, models(1), settings=settings)
        migrations.init()
        migrations.new_sql_revision("notes", NOTES_SQL, "DROP TABLE notes;")
        up = migrations.sql("base:head", dialect="postgresql")
        assert up.startswith("SET lock_timeout = 1234;\n")
        assert up.index("SET lock_timeout") < up.index("BEGIN;") < up.index("CREATE TABLE notes")
        assert up.rstrip().endswith("RESET lock_timeout;")
        assert "statement_timeout" not in up
        assert "lock_timeout" not in migrations.sql("base:head", dialect="sqlite")
    finally:
        db.dispose()


def test_an_existing_alembic_project_is_used_as_it_is(directory: Path, sqlite_url: str) -> None:
    directory.mkdir()
    (directory / "alembic.ini").write_text("[alembic]\nscript_location = .\n")
    (directory / "env.py").write_text("raise RuntimeError('dalkit must not run env.py')\n")
    write_revision(
        directory,
        "aaa111",
        None,
        "op.create_table('things', sa.Column('id', sa.BigInteger(), primary_key=True))",
        "op.drop_table('things')",
    )
    db = Database(sqlite_url)
    try:
        migrations = Migrations(db, directory)
        assert migrations.upgrade().applied == ["aaa111"]
        assert "things" in _tables(db)
    finally:
        db.dispose()


def test_check_lists_a_changed_server_default(db: Database, directory: Path) -> None:
    import sqlalchemy as sa

    def models_with(default: str) -> sa.MetaData:
        metadata = sa.MetaData()
        sa.Table(
            "plans",
            metadata,
            sa.Column("id", sa.BigInteger, primary_key=True),
            sa.Column("tier", sa.String(20), server_default=default),
        )
        return metadata

    settings = MigrationSettings(include_dalkit_tables=False)
    first = Migrations(db, directory, models_with("free"), settings=settings)
    first.init()
    first.revision("plans")
    first.upgrade()
    first.check()
    with pytest.raises(SchemaDriftError) as drift:
        Migrations(db, directory, models_with("paid"), settings=settings).check()
    assert any(
        "plans.tier: server default" in d and "paid" in d for d in drift.value.differences
    ), drift.value.differences


def test_autogenerate_and_check_refuse_to_run_without_the_models(
    directory: Path, sqlite_url: str
) -> None:
    from dalkit.migrations import MigrationError

    db = Database(sqlite_url)
    try:
        migrations = Migrations(db, directory)
        migrations.init()
        with pytest.raises(MigrationError, match="needs your models"):
            migrations.revision("oops")
        with pytest.raises(MigrationError, match="needs your models"):
            migrations.check()
        assert migrations.revision("by hand", autogenerate=False).path.exists()
    finally:
        db.dispose()


def test_a_removed_enum_value_is_drift_and_its_revision_is_flagged(
    postgres_database_url: str, directory: Path
) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    def moods(*values: str) -> sa.MetaData:
        metadata = sa.MetaData()
        sa.Table(
            "people",
            metadata,
            sa.Column("id", sa.BigInteger, primary_key=True),
            sa.Column("mood", sa.Enum(*values, name="mood")),
        )
        return metadata

    db = Database(make_url(postgres_database_url).set(drivername="postgresql+psycopg"))
    settings = MigrationSettings(include_dalkit_tables=False)
    try:
        first = Migrations(db, directory, moods("happy", "sad", "meh"), settings=settings)
        first.init()
        first.revision("people")
        first.upgrade()
        second = Migrations(db, directory, moods("happy", "sad"), settings=settings)
        with pytest.raises(SchemaDriftError, match="values only in the database: meh"):
            second.check()
        removal = second.revision("no more meh")
        assert "ALTER TYPE mood RENAME TO mood_old" in removal.path.read_text()
        assert "enum-value-removed" in {f.rule for f in removal.findings}
        second.upgrade(allow_unsafe=True)
        second.check()
    finally:
        db.dispose()
