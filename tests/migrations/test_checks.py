"""The built-in checks of a project's own migrations (single head, round trip, no drift, no
trace left by a downgrade), directly and as the pytest plugin a project registers."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dalkit import Database
from dalkit.migrations import Migrations, MigrationSettings
from dalkit.migrations.checks import MigrationCheckError
from dalkit.migrations.testing import MigrationChecks

from .project import write_revision

#: the test project has no dalkit tables (audit log, outbox, inbox)
SETTINGS = MigrationSettings(include_dalkit_tables=False)

USERS = """
op.create_table('users', sa.Column('id', sa.BigInteger(), primary_key=True),
                sa.Column('email', sa.String(100), nullable=False))
"""


def _metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    users = sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email", sa.String(100), nullable=False),
    )
    sa.Index("ix_users_email", users.c.email)
    return metadata


def _sound_project(directory: Path) -> None:
    write_revision(directory, "r1", None, USERS, "op.drop_table('users')")
    write_revision(
        directory,
        "r2",
        "r1",
        "op.create_index_concurrently('ix_users_email', 'users', ['email'])",
        "op.drop_index_concurrently('ix_users_email', table_name='users')",
    )


def test_the_checks_pass_on_a_sound_project(db: Database, directory: Path) -> None:
    _sound_project(directory)
    migrations = Migrations(db, directory, _metadata(), settings=SETTINGS)
    checks = MigrationChecks(migrations)
    checks.single_head()
    checks.roundtrip()
    checks.downgrades_leave_no_trace()
    checks.no_drift()


def test_a_downgrade_that_leaves_a_trace_is_caught(db: Database, directory: Path) -> None:
    write_revision(directory, "r1", None, USERS, "op.drop_table('users')")
    write_revision(
        directory, "r2", "r1", "op.create_index_concurrently('ix_users_email', 'users', ['email'])"
    )
    checks = MigrationChecks(Migrations(db, directory, _metadata(), settings=SETTINGS))
    with pytest.raises(MigrationCheckError, match="downgrade of r2"):
        checks.downgrades_leave_no_trace()


def test_two_heads_and_drift_are_caught(sqlite_url: str, directory: Path) -> None:
    _sound_project(directory)
    write_revision(directory, "r3", "r1", "op.add_column('users', sa.Column('x', sa.Text()))")
    db = Database(sqlite_url)
    try:
        checks = MigrationChecks(Migrations(db, directory, _metadata(), settings=SETTINGS))
        with pytest.raises(MigrationCheckError, match="expected one head, found 2"):
            checks.single_head()
        with pytest.raises(Exception, match=r"users\.x: only in the database"):
            checks.no_drift()
    finally:
        db.dispose()


def test_a_project_registers_the_plugin_and_imports_the_tests(
    pytester: pytest.Pytester, directory: Path
) -> None:
    _sound_project(directory)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        f"""
        import pytest
        import sqlalchemy as sa
        from pathlib import Path

        from dalkit.migrations import MigrationSettings

        pytest_plugins = ["dalkit.migrations.testing"]

        @pytest.fixture
        def migrations_settings():
            return MigrationSettings(include_dalkit_tables=False)

        @pytest.fixture
        def migrations_directory():
            return Path({str(directory)!r})

        @pytest.fixture
        def migrations_metadata():
            metadata = sa.MetaData()
            users = sa.Table(
                "users", metadata,
                sa.Column("id", sa.BigInteger, primary_key=True),
                sa.Column("email", sa.String(100), nullable=False),
            )
            sa.Index("ix_users_email", users.c.email)
            return metadata
        """
    )
    pytester.makepyfile(
        test_migrations="""
        from dalkit.migrations.testing import (  # noqa: F401
            test_downgrades_leave_no_trace,
            test_migrations_match_models,
            test_roundtrip,
            test_single_head,
        )
        """
    )
    result = pytester.runpytest("-k", "sqlite", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, deselected=4)
