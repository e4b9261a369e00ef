"""Raw SQL against audited tables: `check_raw_write()` refuses a write to an audited table, whose
old and new values raw SQL gives no way to record, found by `written_tables()` (re-exported from
`dalkit.query.sql_tokens`, which reads SQL with sqlparse's tokenizer)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from dalkit.audit.cascades import cascade_parents
from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.registry import audited_tables, table_audit
from dalkit.engine.schemas import of_engine
from dalkit.query.sql_tokens import written_tables

__all__ = ["audited_target", "check_raw_write", "describe", "written_tables"]

_WRITE_WORD = re.compile(r"\b(?:insert|update|delete|merge|truncate|replace|copy)\b", re.I)
_DELETE_WORD = re.compile(r"\b(?:delete|truncate|merge)\b", re.I)  # may remove rows
_UPDATE_WORD = re.compile(r"\b(?:update|merge)\b", re.I)  # may change referenced keys
# TRUNCATE ... CASCADE empties the tables referencing those named, whatever their ON DELETE;
# without CASCADE, PostgreSQL refuses to truncate a table that a table not named references
_TRUNCATE_WORD = re.compile(r"\btruncate\b", re.I)


def _matches(tables: Iterable[sa.Table], schema: str | None, name: str) -> sa.Table | None:
    for table in tables:
        if table.name.lower() == name.lower() and (
            schema is None or (table.schema or "").lower() in (schema.lower(), "")
        ):
            return table
    return None


def check_raw_write(sql: str, engine: Any = None) -> None:
    """Raise UnauditedWriteError if ``sql`` writes a table of an audited model, or deletes from
    a table whose foreign keys reach one (ON DELETE CASCADE / SET NULL): raw SQL leaves no
    trace of the old and new values, so such writes must go through the ORM or a repository
    (which record them). Reads, and writes to other tables, pass.

    Args:
        sql: The SQL text.
        engine: The engine it runs on: an audited table is checked unless that engine
            created a table of its name for another schema only (`dalkit.engine.schemas`;
            default: every audited table).

    Raises:
        UnauditedWriteError: When ``sql`` writes a table of an audited model.
    """
    table = audited_target(sql, engine)
    if table is not None:
        raise UnauditedWriteError(
            f"raw SQL writes {describe(table)}, and its changes cannot be recorded: write it "
            "through the ORM or a repository instead"
        )


def describe(table: sa.Table) -> str:
    """``table`` and why writing it concerns the audit, for an error message."""
    if table_audit(table) is not None:
        return f"{table.fullname}, the table of an audited model"
    if any(t is table for t in cascade_parents() + cascade_parents(updating=True)):
        return (
            f"{table.fullname}, whose rows audited rows reference with an ON DELETE / UPDATE action"
        )
    return f"{table.fullname}, which audited rows reference (TRUNCATE ... CASCADE empties them)"


def audited_target(sql: str, engine: Any = None) -> sa.Table | None:
    """The table of an audited model that ``sql`` writes, or the table it deletes from whose
    foreign keys reach one; None if neither; see `check_raw_write`.

    Args:
        sql: The SQL text.
        engine: The engine it runs on (None: every audited table is checked).
    """
    if not _WRITE_WORD.search(sql):
        return None  # no write keyword anywhere: nothing to parse
    tables = of_engine(audited_tables(), engine)
    if _DELETE_WORD.search(sql):
        tables += of_engine(cascade_parents(), engine)
    if _UPDATE_WORD.search(sql):
        tables += of_engine(cascade_parents(updating=True), engine)
    if _TRUNCATE_WORD.search(sql):
        tables += of_engine(cascade_parents(truncating=True), engine)
    if not tables:
        return None
    for schema, name in written_tables(sql):
        table = _matches(tables, schema, name)
        if table is not None:
            return table
    return None
