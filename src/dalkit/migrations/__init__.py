"""Migrations that are safe to run in production: Alembic without an ini file or env.py, a
linter for unsafe operations, lock and statement timeouts, a migration lock, concurrent index
operations, ``.sql`` revisions, and backups restored when a run fails."""

from __future__ import annotations

from dalkit.migrations import concurrent as _concurrent  # registers op.create_index_concurrently
from dalkit.migrations.checks import MigrationCheckError
from dalkit.migrations.commands import Migrations, ProgressCallback
from dalkit.migrations.concurrent import CreateIndexConcurrentlyOp, DropIndexConcurrentlyOp
from dalkit.migrations.errors import (
    BackupError,
    MigrationError,
    MigrationFailedError,
    MigrationLockError,
    SchemaDriftError,
    UnsafeMigrationError,
)
from dalkit.migrations.lint import Finding, blocking, lint_scripts
from dalkit.migrations.lint_rules import RULES, Rule
from dalkit.migrations.results import NewRevision, RevisionInfo, UpgradeResult
from dalkit.migrations.safety import safety_assured
from dalkit.migrations.settings import MigrationSettings

del _concurrent

__all__ = [
    "BackupError",
    "CreateIndexConcurrentlyOp",
    "DropIndexConcurrentlyOp",
    "Finding",
    "MigrationCheckError",
    "MigrationError",
    "MigrationFailedError",
    "MigrationLockError",
    "MigrationSettings",
    "Migrations",
    "NewRevision",
    "ProgressCallback",
    "RULES",
    "RevisionInfo",
    "Rule",
    "SchemaDriftError",
    "UnsafeMigrationError",
    "UpgradeResult",
    "blocking",
    "lint_scripts",
    "safety_assured",
]

# users import these from dalkit.migrations: say so in reprs, tracebacks and pickles
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _value.__module__ = __name__
del _name, _value
