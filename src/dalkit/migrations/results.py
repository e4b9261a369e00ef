"""What the commands return: revisions in the history, an upgrade's outcome, a new revision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import Script

from dalkit.migrations.lint import Finding

__all__ = ["NewRevision", "RevisionInfo", "UpgradeResult"]


@dataclass(frozen=True)
class RevisionInfo:
    """One revision of the history.

    Attributes:
        revision: Its id.
        down_revision: The revisions it follows (several for a merge; none for the first).
        message: The first line of its message.
        path: Its file.
        kind: ``"python"`` or ``"sql"``.
        is_head: Whether no revision follows it.
    """

    revision: str
    down_revision: tuple[str, ...]
    message: str
    path: Path
    kind: str  # "python" or "sql"
    is_head: bool

    @classmethod
    def of(cls, script: Script, heads: tuple[str, ...] = ()) -> RevisionInfo:
        """The info of an Alembic Script.

        Args:
            script: The Alembic script.
            heads: The ids of the head revisions.

        Returns:
            The info.
        """
        down = script.down_revision
        downs = () if down is None else ((down,) if isinstance(down, str) else tuple(down))
        kind = "sql" if getattr(script.module, "dalkit_sql_revision", None) else "python"
        message = (script.doc or "").strip().splitlines()[0] if script.doc else ""
        return cls(
            script.revision, downs, message, Path(script.path), kind, script.revision in heads
        )


@dataclass(frozen=True)
class UpgradeResult:
    """What ``upgrade``/``downgrade`` did: revisions run in order, the backup taken, and the
    linter's findings (those that did not block: safety_assured, or allow_unsafe).

    Attributes:
        applied: The revision ids run, in order.
        backup: The backup file taken, if any.
        findings: The lint findings that did not block.
    """

    applied: list[str]
    backup: Path | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class NewRevision:
    """A revision file just written, and the linter's warnings about it.

    Attributes:
        revision: Its id.
        path: Its file.
        findings: What the linter found in it.
    """

    revision: str
    path: Path
    findings: list[Finding]
