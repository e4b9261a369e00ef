"""The linter: runs each revision's ``upgrade()`` against a recording ``op`` (no database) and
checks every operation and raw SQL statement with `dalkit.migrations.lint_rules`."""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.operations import Operations, ops
from alembic.runtime.migration import MigrationContext
from alembic.script import Script

from dalkit.migrations.lint_rules import RULES, RevisionState, check_operation, check_sql
from dalkit.migrations.safety import assured_reason
from dalkit.migrations.sql_files import SqlRevision, split_statements

__all__ = ["Finding", "blocking", "lint_scripts"]


@dataclass(frozen=True)
class Finding:
    """One unsafe operation: the rule, the operation, where it is, and the safe recipe.

    Attributes:
        rule: The rule's id (``"adding-not-nullable-field"``, ...).
        operation: The operation, as written.
        revision: The revision's id.
        path: The revision's file.
        line: The operation's line in that file.
        problem: What is unsafe about it.
        recipe: The safe way to do the same.
        assured: The reason given by `safety_assured`; such a finding is shown but does not
            block.
    """

    rule: str
    operation: str
    revision: str
    path: str
    line: int
    problem: str
    recipe: str
    assured: str | None = None

    @property
    def blocks(self) -> bool:
        """Whether this finding stops ``upgrade`` (it does unless safety_assured)."""
        return self.assured is None and self.rule != "unlintable"

    def __str__(self) -> str:
        where = f"{Path(self.path).name}:{self.line}"
        note = f" [safety_assured: {self.assured}]" if self.assured else ""
        recipe = f"instead: {self.recipe}{note}"
        return f"{where} {self.rule}: {self.operation}: {self.problem}; {recipe}"


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that stop an upgrade.

    Args:
        findings: Lint findings.

    Returns:
        Those not covered by `safety_assured`.
    """
    return [finding for finding in findings if finding.blocks]


def lint_scripts(
    scripts: Iterable[Script], *, dialect: str = "postgresql", lock_timeout: bool = True
) -> list[Finding]:
    """Lint the upgrade of each script, in the order given.

    Args:
        scripts: Alembic scripts, Python or ``.sql``.
        dialect: The dialect raw SQL is read as.
        lock_timeout: Whether runs set a lock timeout; without one, each revision gets a
            ``missing-lock-timeout`` finding.

    Returns:
        The findings, blocking or not.
    """
    findings: list[Finding] = []
    for script in scripts:
        parsed: SqlRevision | None = getattr(script.module, "dalkit_sql_revision", None)
        found = _lint_sql_file(script, parsed) if parsed else _lint_python(script, dialect)
        if not lock_timeout and found is not None:
            found.append(_finding("missing-lock-timeout", "settings", script, 1, None))
        findings.extend(found or [])
    return findings


def _lint_sql_file(script: Script, parsed: SqlRevision) -> list[Finding]:
    state = RevisionState()
    findings = []
    offset = 0
    for statement in split_statements(parsed.up_sql):
        offset = parsed.up_sql.find(statement, offset)
        line = parsed.up_line + parsed.up_sql.count("\n", 0, max(offset, 0))
        for rule in dict.fromkeys(check_sql(statement, state)):
            findings.append(_finding(rule, _short(statement), script, line, parsed.assured))
    return findings


class _RecordingOperations(Operations):
    """An ``op`` that records each operation with its line and runs nothing."""

    def __init__(self, context: MigrationContext, script_path: str) -> None:
        super().__init__(context)
        self.script_path = script_path
        # the name the code object carries may be the resolved one
        self.other_names = {str(Path(script_path).resolve())}
        self.recorded: list[tuple[ops.MigrateOperation, int, str | None]] = []

    def invoke(self, operation: ops.MigrateOperation) -> Any:
        self.recorded.append((operation, self._line(), assured_reason()))
        if isinstance(operation, ops.CreateTableOp):
            return operation.to_table(self.migration_context)
        return None

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Be ``alembic.op`` for the block (proxies are keyed by class: use Operations' own)."""
        attr_names, modules = Operations._setups[Operations]
        names = ["_proxy", *attr_names]
        saved = [{name: globals_.get(name) for name in names} for globals_, _ in modules]
        for globals_, _ in modules:
            globals_["_proxy"] = self
            for name in attr_names:
                globals_[name] = getattr(self, name)
        try:
            yield
        finally:
            for (globals_, _), before in zip(modules, saved, strict=True):
                globals_.update(before)

    def _line(self) -> int:
        frame = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename == self.script_path or filename in self.other_names:
                return frame.f_lineno
            frame = frame.f_back  # type: ignore[assignment]
        return 0


@functools.lru_cache(maxsize=8)
def _offline_context(dialect: str) -> MigrationContext:
    # building a dialect is the dear part; the recorder never emits anything through it
    return MigrationContext.configure(
        dialect_name=dialect, opts={"as_sql": True, "output_buffer": io.StringIO()}
    )


def _lint_python(script: Script, dialect: str) -> list[Finding]:
    context = _offline_context(dialect)
    recorder = _RecordingOperations(context, script.path)
    try:
        with recorder.installed():
            script.module.upgrade()
    except Exception as exc:  # a data migration may need a live connection
        return [
            Finding(
                "unlintable",
                "upgrade()",
                script.revision,
                script.path,
                0,
                f"could not be linted without a database ({type(exc).__name__}: {exc})",
                "review it by hand",
            )
        ]
    state = RevisionState()
    findings = []
    for operation, line, assured in recorder.recorded:
        for rule in dict.fromkeys(check_operation(operation, state)):
            findings.append(_finding(rule, _describe(operation), script, line, assured))
    return findings


def _finding(rule: str, operation: str, script: Script, line: int, assured: str | None) -> Finding:
    known = RULES[rule]
    return Finding(
        rule, operation, script.revision, script.path, line, known.problem, known.recipe, assured
    )


def _describe(operation: ops.MigrateOperation) -> str:
    if isinstance(operation, ops.ExecuteSQLOp):
        return f"op.execute({_short(str(operation.sqltext))!r})"
    name = type(operation).__name__.removesuffix("Op")
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    target = [
        str(value)
        for attr in ("index_name", "constraint_name", "table_name", "source_table", "column_name")
        if isinstance(value := getattr(operation, attr, None), str)
    ]
    column = getattr(operation, "column", None)
    if column is not None and hasattr(column, "name"):
        target.append(column.name)
    return f"op.{snake}({', '.join(repr(t) for t in dict.fromkeys(target))})"


def _short(sql: str) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= 80 else flat[:77] + "..."
