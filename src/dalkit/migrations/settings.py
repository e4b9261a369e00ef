"""MigrationSettings: the timeouts, retries, lock wait and backup place every run uses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dalkit.errors import ConfigurationError
from dalkit.transaction.retry import backoff_delay

__all__ = ["MigrationSettings"]


@dataclasses.dataclass(frozen=True)
class MigrationSettings:
    """How migrations run. Timeouts apply on PostgreSQL to every statement of a run, ``op.execute``
    and concurrent index builds included.

    Attributes:
        lock_timeout_ms: PostgreSQL's ``lock_timeout`` for each statement (``None``: none).
        statement_timeout_ms: PostgreSQL's ``statement_timeout`` (``None``: none).
        lock_retries: How often a statement that hit the lock timeout is retried.
        retry_backoff_s: The first wait before such a retry, doubled for each next one.
        retry_backoff_max_s: The longest such wait.
        lock_wait_s: How long a run waits for another run's migration lock.
        backup_dir: Where ``upgrade(backup=True)`` writes its backups.
        include_dalkit_tables: Add dalkit's own tables (audit log, outbox, inbox) to the
            autogenerate target.
        version_table: Alembic's version table.
        ignore_unknown_tables: Leave tables that exist in the database but not in the metadata
            out of autogenerate and ``check()`` (a database shared with other applications).
        lint_dialect: The dialect the linter renders raw SQL for without a database at hand.

    Raises:
        ConfigurationError: When a value is out of range.
    """

    lock_timeout_ms: int | None = 5_000
    statement_timeout_ms: int | None = 15 * 60_000
    lock_retries: int = 5
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 10.0
    #: how long a run waits for another run's migration lock before MigrationLockError
    lock_wait_s: float = 600.0
    #: where upgrade(backup=True) writes its backups
    backup_dir: Path = Path(".dalkit-backups")
    #: add dalkit's own tables (audit log, outbox, inbox) to the autogenerate target
    include_dalkit_tables: bool = True
    version_table: str = "alembic_version"
    #: leave tables that exist in the database but not in the metadata out of autogenerate and
    #: check() (a database shared with other applications)
    ignore_unknown_tables: bool = False
    #: the dialect the linter renders raw SQL for when it has no database at hand
    lint_dialect: str = "postgresql"

    def __post_init__(self) -> None:
        for name in ("lock_timeout_ms", "statement_timeout_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive or None, got {value!r}")
        if self.lock_retries < 0:
            raise ConfigurationError("lock_retries must be zero or positive")
        if self.retry_backoff_s < 0 or self.retry_backoff_max_s < self.retry_backoff_s:
            raise ConfigurationError("need 0 <= retry_backoff_s <= retry_backoff_max_s")
        if self.lock_wait_s <= 0:
            raise ConfigurationError("lock_wait_s must be positive")

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before a retry after a lock timeout.

        Args:
            attempt: The retry's number, from 1.

        Returns:
            The wait, at most ``retry_backoff_max_s``.
        """
        return backoff_delay(attempt, self.retry_backoff_s, self.retry_backoff_max_s, 0.0, 0.0)
