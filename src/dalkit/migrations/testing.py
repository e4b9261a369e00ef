"""pytest plugin: a project's checks of its own migrations, on an empty database of each backend.

Register it (``pytest_plugins = ["dalkit.migrations.testing"]``), point it at your migrations by
overriding the ``migrations_directory``, ``migrations_metadata`` (and ``migrations_settings``)
fixtures, then either use the
``migration_checks`` fixture or import the ready-made tests into a test module::

    from dalkit.migrations.testing import (  # noqa: F401
        test_downgrades_leave_no_trace, test_migrations_match_models, test_roundtrip,
        test_single_head,
    )
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dalkit import Database
from dalkit.migrations import checks
from dalkit.migrations.commands import Migrations
from dalkit.migrations.settings import MigrationSettings

__all__ = [
    "MigrationChecks",
    "migration_checks",
    "migrations_directory",
    "migrations_metadata",
    "migrations_settings",
    "test_downgrades_leave_no_trace",
    "test_migrations_match_models",
    "test_roundtrip",
    "test_single_head",
]


class MigrationChecks:
    """The built-in checks, bound to a Migrations on an empty database."""

    def __init__(self, migrations: Migrations[Database]) -> None:
        self.migrations = migrations

    def single_head(self) -> None:
        """Exactly one head."""
        checks.check_single_head(self.migrations)

    def roundtrip(self) -> None:
        """Empty -> head -> base -> head with an identical schema."""
        checks.check_roundtrip(self.migrations)

    def no_drift(self) -> None:
        """The models match the migrated database."""
        checks.check_no_drift(self.migrations)

    def downgrades_leave_no_trace(self) -> None:
        """Each revision's downgrade undoes its upgrade exactly."""
        checks.check_downgrades_leave_no_trace(self.migrations)


@pytest.fixture
def migrations_directory() -> Path:
    """The project's migration directory; override it in your conftest.py."""
    return Path("migrations")


@pytest.fixture
def migrations_metadata() -> sa.MetaData | None:
    """The project's models' MetaData; override it in your conftest.py."""
    return None


@pytest.fixture
def migrations_settings() -> MigrationSettings:
    """The settings the checks run with; override it in your conftest.py."""
    return MigrationSettings()


@pytest.fixture
def migration_checks(
    db: Database,
    migrations_directory: Path,
    migrations_metadata: sa.MetaData | None,
    migrations_settings: MigrationSettings,
) -> MigrationChecks:
    """The checks on an empty database of each backend (the ``db`` fixture's parameters)."""
    migrations = Migrations(
        db, migrations_directory, migrations_metadata, settings=migrations_settings
    )
    return MigrationChecks(migrations)


def test_single_head(migration_checks: MigrationChecks) -> None:
    """The migration history has one head."""
    migration_checks.single_head()


def test_roundtrip(migration_checks: MigrationChecks) -> None:
    """Upgrade, downgrade to base and upgrade again give the same schema."""
    migration_checks.roundtrip()


def test_migrations_match_models(migration_checks: MigrationChecks) -> None:
    """The models and the migrated schema do not drift apart."""
    migration_checks.no_drift()


def test_downgrades_leave_no_trace(migration_checks: MigrationChecks) -> None:
    """Every downgrade undoes its upgrade exactly."""
    migration_checks.downgrades_leave_no_trace()
