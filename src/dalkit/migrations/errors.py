"""The errors of dalkit's migrations, all under `MigrationError`:

```text
DalkitError
└── MigrationError              a migration command could not do what was asked
    ├── UnsafeMigrationError    the linter found unsafe operations; .findings
    ├── SchemaDriftError        the models and the database differ; .differences
    ├── BackupError             a backup could not be taken or restored
    ├── MigrationLockError      another run held the migration lock past lock_wait_s
    └── MigrationFailedError    a revision failed part-way; .revision, .restored, .backup,
                                .committed
```

Each has ``.bad_input``: True when the caller's input (a revision, a range, a backup file)
names nothing usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalkit.errors import DalkitError

__all__ = [
    "BackupError",
    "MigrationError",
    "MigrationFailedError",
    "MigrationLockError",
    "SchemaDriftError",
    "UnsafeMigrationError",
]


class MigrationError(DalkitError):
    """Raised when a migration command cannot do what was asked (bad target, no directory...).

    Args:
        *args: The message.
        bad_input: Whether the caller's own input is at fault (a revision, range or backup
            file that names nothing usable), rather than the database or the revisions; the
            command line exits 2 for it, as for any bad input.

    Attributes:
        bad_input: As given.
    """

    def __init__(self, *args: object, bad_input: bool = False) -> None:
        super().__init__(*args)
        self.bad_input = bad_input


class UnsafeMigrationError(MigrationError):
    """Raised before ``upgrade`` runs anything when a pending revision has unsafe operations.

    Args:
        findings: The blocking findings (``dalkit.migrations.Finding``).
    """

    # the findings are dalkit.migrations.lint.Finding (not imported: lint depends on this module)
    def __init__(self, findings: Sequence[Any]) -> None:
        self.findings = list(findings)
        lines = "\n".join(f"  {finding}" for finding in self.findings)
        super().__init__(
            f"{len(self.findings)} unsafe operation(s); fix them, mark them "
            f"safety_assured(reason=...) or run with --allow-unsafe:\n{lines}"
        )


class SchemaDriftError(MigrationError):
    """Raised by ``check()`` when the models and the migrated database differ.

    Args:
        differences: Each difference, described.
    """

    def __init__(self, differences: Sequence[str]) -> None:
        self.differences = list(differences)
        lines = "\n".join(f"  - {difference}" for difference in self.differences)
        count = len(self.differences)
        super().__init__(f"the database differs from the models in {count} way(s):\n{lines}")


class BackupError(MigrationError):
    """Raised when a backup cannot be taken (no pg_dump, in-memory SQLite) or restored."""


class MigrationLockError(MigrationError):
    """Raised when another run held the migration lock for longer than ``lock_wait_s``."""


class MigrationFailedError(MigrationError):
    """Raised when a revision failed part-way; says whether the database was restored.

    Args:
        message: What failed.
        revision: The revision that failed, if known.
        restored: Whether the backup was restored.
        backup: The backup file, if one was taken.
        committed: The statements of the failed revision that had been committed before it
            failed (by an autocommit block, such as a concurrent index's) and were not
            restored: they stay applied while the revision is not recorded.
    """

    def __init__(
        self,
        message: str,
        *,
        revision: str | None,
        restored: bool,
        backup: Path | None,
        committed: Sequence[str] = (),
    ) -> None:
        self.revision = revision
        self.restored = restored
        self.backup = backup
        self.committed = list(committed)
        super().__init__(message)
