"""What a revision committed before it failed. An autocommit block
(``op.create_index_concurrently``, a ``.sql`` revision's CONCURRENTLY statement, a revision's own
``op.get_context().autocommit_block()``) commits the revision's statements so far: when the
revision fails after it, those stay applied while the revision is not recorded, and running it
again, a lock-timeout retry included, would repeat them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["CommittedWork", "track_committed_work", "unrepeatable"]

# statements that leave nothing behind for a second run to trip over
_NO_CHANGE = re.compile(
    r"^\s*(SELECT|SET|SHOW|RESET|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)\b", re.IGNORECASE
)
# what a second run repeats harmlessly: the concurrent index statements dalkit writes
_REPEATABLE = re.compile(
    r"^\s*(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX)\s+CONCURRENTLY\s+IF\s+(NOT\s+)?EXISTS\b",
    re.IGNORECASE,
)


class CommittedWork:
    """The statements that changed something in one run of one revision: those committed
    already, and those still in its open transaction.

    Args:
        version_table: Alembic's version table, whose statements are bookkeeping, not work.
    """

    def __init__(self, version_table: str) -> None:
        self.version_table = version_table
        self.pending: list[str] = []
        self.committed: list[str] = []

    def reset(self) -> None:
        """Forget everything: a new run of a revision starts."""
        self.pending.clear()
        self.committed.clear()

    @property
    def unrepeatable(self) -> list[str]:
        """The committed statements that a second run would not get past, or apply twice."""
        return unrepeatable(self.committed)

    def executed(self, _connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        """``after_cursor_execute`` listener: a statement ran without error."""
        if not _NO_CHANGE.match(statement) and self.version_table not in statement:
            self.pending.append(" ".join(statement.split()))

    def commit(self, _connection: Connection) -> None:
        """``commit`` listener: what ran so far is committed."""
        self.committed.extend(self.pending)
        self.pending.clear()


def unrepeatable(statements: Sequence[str]) -> list[str]:
    """The statements that a second run of their revision would not get past, or apply twice.

    Args:
        statements: Statements a revision committed.

    Returns:
        Those that are not concurrent index statements with IF [NOT] EXISTS.
    """
    return [statement for statement in statements if not _REPEATABLE.match(statement)]


@contextmanager
def track_committed_work(connection: Connection, work: CommittedWork) -> Iterator[CommittedWork]:
    """Record into ``work`` what runs and commits on ``connection`` while the block runs.

    Args:
        connection: The connection the revisions run on.
        work: Where to record it (reset by the caller before each run of a revision).

    Yields:
        ``work``.
    """
    sa.event.listen(connection, "after_cursor_execute", work.executed)
    sa.event.listen(connection, "commit", work.commit)
    try:
        yield work
    finally:
        sa.event.remove(connection, "after_cursor_execute", work.executed)
        sa.event.remove(connection, "commit", work.commit)
