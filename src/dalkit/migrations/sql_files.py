"""Plain ``.sql`` revisions: their header, the ``-- down`` section, and statement splitting.

A file in ``versions/`` reads::

    -- revision: 1a2b3c4d5e6f
    -- down_revision: 0f9e8d7c6b5a      (or "none" for the first revision)
    -- message: add the orders table
    CREATE TABLE orders (id bigint PRIMARY KEY);
    -- down
    DROP TABLE orders;
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from pathlib import Path

from dalkit.migrations.concurrent import execute_concurrently, is_concurrent
from dalkit.migrations.errors import MigrationError

__all__ = ["SqlRevision", "load_sql_module", "parse_sql_revision", "split_statements"]

_HEADER = re.compile(r"^--\s*(revision|down_revision|message|safety_assured)\s*:\s*(.*?)\s*$")
_DOWN_MARKER = re.compile(r"^--\s*down\s*$", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$[A-Za-z_0-9]*\$")


class SqlRevision:
    """A parsed ``.sql`` revision: its identity, its up and down SQL, and the line of each part."""

    def __init__(
        self,
        path: Path,
        revision: str,
        down_revision: str | None,
        message: str,
        up_sql: str,
        down_sql: str | None,
        up_line: int,
        down_line: int,
        assured: str | None,
    ) -> None:
        self.path = path
        self.revision = revision
        self.down_revision = down_revision
        self.message = message
        self.up_sql = up_sql
        self.down_sql = down_sql
        self.up_line = up_line
        self.down_line = down_line
        #: the reason of a ``-- safety_assured: reason`` header line, if any
        self.assured = assured


def parse_sql_revision(path: Path) -> SqlRevision:
    """Read ``path``; raise MigrationError naming the file when its header is incomplete."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header: dict[str, str] = {}
    body_start = 0
    for number, line in enumerate(lines):
        if _DOWN_MARKER.match(line.strip()):
            break
        match = _HEADER.match(line.strip())
        if match is None:
            if line.strip() and not line.strip().startswith("--"):
                break
            body_start = number + 1
            continue
        header[match.group(1)] = match.group(2)
        body_start = number + 1
    if "revision" not in header or "down_revision" not in header:
        raise MigrationError(
            f"{path}: a .sql revision needs '-- revision:' and '-- down_revision:' header lines"
        )
    down_at = next(
        (n for n in range(body_start, len(lines)) if _DOWN_MARKER.match(lines[n].strip())), None
    )
    up_lines = lines[body_start:down_at] if down_at is not None else lines[body_start:]
    down_sql = "\n".join(lines[down_at + 1 :]) if down_at is not None else None
    down_revision = header["down_revision"]
    return SqlRevision(
        path=path,
        revision=header["revision"],
        down_revision=None if down_revision.lower() in ("", "none", "null") else down_revision,
        message=header.get("message", ""),
        up_sql="\n".join(up_lines),
        down_sql=down_sql,
        up_line=body_start + 1,
        down_line=(down_at or 0) + 2,
        assured=header.get("safety_assured"),
    )


def load_sql_module(path: Path) -> types.ModuleType:
    """A module shaped like a Python revision, so Alembic keeps both kinds in one history."""
    parsed = parse_sql_revision(path)
    module = types.ModuleType(f"dalkit_sql_revision_{parsed.revision}")
    module.__doc__ = parsed.message
    module.__file__ = str(path)
    module.revision = parsed.revision  # type: ignore[attr-defined]
    module.down_revision = parsed.down_revision  # type: ignore[attr-defined]
    module.branch_labels = None  # type: ignore[attr-defined]
    module.depends_on = None  # type: ignore[attr-defined]
    module.dalkit_sql_revision = parsed  # type: ignore[attr-defined]
    module.upgrade = _runner(parsed.up_sql, path, "up")  # type: ignore[attr-defined]
    module.downgrade = _runner(parsed.down_sql, path, "down")  # type: ignore[attr-defined]
    return module


def _runner(sql: str | None, path: Path, direction: str) -> Callable[[], None]:
    def run() -> None:
        from alembic import op
        from alembic.operations import Operations

        if sql is None:
            raise MigrationError(f"{path.name} has no '-- down' section: it cannot be downgraded")
        for statement in split_statements(sql):
            if is_concurrent(statement):
                # outside the transaction, as op.create_index_concurrently runs its build
                execute_concurrently(Operations(op.get_context()), statement)
            else:
                op.execute(statement)

    return run


def split_statements(sql: str, *, comments: bool = True) -> list[str]:
    """Split on ``;`` outside quotes, identifiers, comments and dollar-quoted bodies.

    Args:
        sql: One or more SQL statements.
        comments: Whether to keep the comments; without, each becomes a space (those inside
            quotes and dollar-quoted bodies stay).

    Returns:
        The statements that hold code, stripped.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        end = i + 1
        if sql.startswith("--", i) or sql.startswith("/*", i):
            if sql.startswith("--", i):
                newline = sql.find("\n", i)
                end = n if newline < 0 else newline
            else:
                close = sql.find("*/", i + 2)
                end = n if close < 0 else close + 2
            if not comments:
                current.append(" ")
                i = end
                continue
        elif char in ("'", '"'):
            end = i + 1
            # E'...' (PostgreSQL's escape strings): a backslash escapes the next character
            escapes = char == "'" and _starts_escape_string(sql, i)
            while end < n:
                if escapes and sql[end] == "\\":
                    end += 2
                    continue
                if sql[end] == char:
                    if end + 1 < n and sql[end + 1] == char:  # doubled quote
                        end += 2
                        continue
                    end += 1
                    break
                end += 1
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, i)) is not None:
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
        elif char == ";":
            statements.append("".join(current))
            current = []
            i += 1
            continue
        current.append(sql[i:end])
        i = end
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _starts_escape_string(sql: str, quote: int) -> bool:
    """Whether the ``'`` at ``quote`` opens an E'...' string: an E right before it that is not
    the end of a longer word (``type'...'`` casts, names)."""
    if quote == 0 or sql[quote - 1] not in "eE":
        return False
    return quote == 1 or not (sql[quote - 2].isalnum() or sql[quote - 2] in "_$")


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.DOTALL)
    return bool(without_comments.strip())
