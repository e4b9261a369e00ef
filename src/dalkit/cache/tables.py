"""The one name the cache knows a table by (`table_name`), and which tables a write reaches
(its target, plus the tables whose foreign keys cascade from it); what a read depends on is
`dalkit.cache.reads`.

Raw SQL may spell a table in any case and with or without its schema (``UPDATE Items``,
``DELETE FROM public.items``): the cache folds every spelling to the table's bare name in lower
case, so that each reaches the entries of the table it writes. Two tables that fold to one name
(same-named tables of two schemas, or ``"Items"`` and ``items`` on PostgreSQL) then share their
version: a write to one costs the other's entries a miss, never a stale read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlparse
from sqlalchemy import ForeignKey, Table
from sqlalchemy.exc import NoReferencedColumnError, NoReferencedTableError

__all__ = [
    "ALL",
    "CALL",
    "call",
    "cascades_from",
    "count_tables",
    "dependents",
    "each_named",
    "is_call",
    "table_name",
    "text_write",
]

#: the name standing for every table: bumped by DDL and by writes whose target is unknown
ALL = "*"
#: what `cascades_from` adds to a table's name
_CASCADES = "|cascades"
#: what ends the name of a function's call among tables (`dalkit.cache.functions`)
CALL = "()"


def call(name: str) -> str:
    """How a call of the database's function ``name`` is named among tables."""
    return name.lower() + CALL


def is_call(name: str) -> bool:
    """Whether ``name``, among an entry's or a write's tables, is a function's call."""
    return name.endswith(CALL)


_KEPT = 2000  # tables tuples whose names each_named keeps, at most


def each_named(
    tables: Iterable[str], name: Callable[[str], str], kept: dict[tuple[str, ...], tuple[str, ...]]
) -> Sequence[str]:
    """``name`` of each of ``tables``; for a tuple (a read's tables: the same few again and
    again), kept in ``kept``, because a read of a partitioned table names every partition."""
    if type(tables) is not tuple:
        return [name(table) for table in tables]
    found = kept.get(tables)
    if found is None:
        if len(kept) >= _KEPT:
            kept.clear()
        found = kept[tables] = tuple(name(table) for table in tables)
    return found


_CASCADING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|merge|truncate|create|drop|alter|replace|copy|grant|revoke|"
    r"vacuum|reindex|cluster|comment|lock|call|do|refresh|import|attach|detach|execute)\b",
    re.IGNORECASE,
)
_TEMP_TABLE = re.compile(r"^\s*create\s+(?:global\s+|local\s+)?temp(?:orary)?\s+table\b", re.I)
# a name, quoted ("a ""b"" c", any character) or not, and a dotted chain of them (schema.table)
_PART = r'(?:"(?:[^"]|"")*"|[\w$]+)'
_CHAIN = rf"{_PART}(?:\s*\.\s*{_PART})*"
_NAME = rf"({_CHAIN})"
_LAST_PART = re.compile(rf"{_PART}\s*$")
_TARGET = {
    "INSERT": re.compile(rf"^\s*insert\s+(?:or\s+\w+\s+)?into\s+{_NAME}", re.IGNORECASE),
    "UPDATE": re.compile(rf"^\s*update\s+(?:or\s+\w+\s+)?(?:only\s+)?{_NAME}", re.IGNORECASE),
    "DELETE": re.compile(rf"^\s*delete\s+from\s+(?:only\s+)?{_NAME}", re.IGNORECASE),
}
# statements that write only the relations they name, and nothing cascades from: a
# materialized view's refresh (its readers depend on it alone), a TRUNCATE without CASCADE
_REFRESH = re.compile(
    rf"^\s*refresh\s+materialized\s+view\s+(?:concurrently\s+)?{_NAME}(?:\s+with\s+(?:no\s+)?data)?"
    r"\s*;?\s*$",
    re.IGNORECASE,
)
# a procedure's call: what it writes is what its code writes (CatalogMap.procedure_writes)
_CALL_STATEMENT = re.compile(rf"^\s*call\s+{_NAME}\s*\(", re.IGNORECASE)
_ONE_TRUNCATED = rf"(?:only\s+)?({_CHAIN})\s*\*?"
_TRUNCATE = re.compile(
    rf"^\s*truncate\s+(?:table\s+)?((?:{_ONE_TRUNCATED}\s*,\s*)*{_ONE_TRUNCATED})"
    r"(?:\s+(?:restart|continue)\s+identity)?(?:\s+restrict)?\s*;?\s*$",
    re.IGNORECASE,
)


def table_name(table: Any) -> str:
    """The name the cache knows a table by: its bare name in lower case (module docstring).

    Args:
        table: A Table (or anything with a ``name``), or a name as SQL spells it:
            ``Items``, ``public.items``, ``"my schema"."Items"``.

    Returns:
        The same string for every spelling of one table; ``*`` (every table) stays itself.
    """
    if not isinstance(table, str):
        return str(table.name).lower()
    last = _LAST_PART.search(table.strip())
    name = last.group(0).strip() if last is not None else table
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        name = name[1:-1].replace('""', '"')
    return name.lower()


def cascades_from(name: str) -> str:
    """The name of the token an UPDATE or DELETE of table ``name`` bumps besides the table's
    own, and an INSERT does not: an entry reading a table whose foreign keys cascade from
    ``name`` in the database (`dalkit.cache.catalog`) carries it, so a cascade that no model
    declares reaches it, and an INSERT into ``name``, which cascades nothing, does not."""
    return name + _CASCADES


def count_tables(names: Iterable[str]) -> int:
    """How many of ``names`` are tables (`cascades_from` tokens aside): the invalidations
    the statistics count."""
    return sum(1 for name in names if not name.endswith(_CASCADES))


def dependents(table: Table) -> set[str]:
    """The tables a write to ``table`` changes too.

    Args:
        table: The table written.

    Returns:
        The tables whose foreign keys to ``table`` cascade (``ON DELETE/UPDATE CASCADE``,
        ``SET NULL``, ``SET DEFAULT``), recursively.
    """
    found: set[str] = set()
    pending = [table]
    while pending:
        target = pending.pop()
        for other in target.metadata.tables.values():
            if table_name(other) in found:
                continue
            for fk in other.foreign_keys:
                cascades = (fk.ondelete or "").upper() in _CASCADING or (
                    fk.onupdate or ""
                ).upper() in _CASCADING
                if cascades and _references(fk, target):
                    found.add(table_name(other))
                    pending.append(other)
                    break
    return found


def _references(fk: ForeignKey, target: Table) -> bool:
    try:
        return fk.column.table is target
    except (NoReferencedTableError, NoReferencedColumnError):
        # a key to a table its schema lacks: compared by name, which may only say too much
        return table_name(fk.target_fullname.rsplit(".", 1)[0]) == table_name(target)


def text_write(sql: str) -> tuple[frozenset[str], bool] | None:
    """What a raw SQL text writes, and whether foreign keys may cascade from it (an UPDATE or
    a DELETE; an INSERT changes no other row).

    Args:
        sql: The statement as sent to the database.

    Returns:
        None when it writes nothing; else the target of a plain INSERT, UPDATE or DELETE, of
        a materialized view's REFRESH, the tables of a TRUNCATE without CASCADE, by
        `table_name`, the procedure of a ``CALL`` (`call`), or ``{ALL}`` for DDL or anything
        else that may write; and the flag.
    """
    if _WRITE_WORDS.search(sql) is None:
        return None
    statements = [s for s in sqlparse.parse(sql) if str(s).strip()]
    if len(statements) != 1:
        return _EVERYTHING
    statement = statements[0]
    kind = statement.get_type()  # type: ignore[no-untyped-call]
    stripped = sqlparse.format(str(statement), strip_comments=True).strip()
    if kind == "SELECT" and not re.search(r"\b(insert|update|delete)\b", stripped, re.I):
        return None
    if _TEMP_TABLE.match(stripped):
        return None  # private to the connection: no other reader can have cached it
    refreshed = _REFRESH.match(stripped)
    if refreshed is not None:
        return frozenset({table_name(refreshed.group(1))}), False
    truncated = _TRUNCATE.match(stripped)
    if truncated is not None:  # (with CASCADE: every table referencing them, so everything)
        names = re.findall(_ONE_TRUNCATED, truncated.group(1), re.IGNORECASE)
        return frozenset(table_name(name) for name in names), False
    procedure = _CALL_STATEMENT.match(stripped)
    if procedure is not None:
        return frozenset({call(table_name(procedure.group(1)))}), False
    pattern = _TARGET.get(kind)
    match = pattern.match(stripped) if pattern is not None else None
    if match is None:
        # a writable CTE, DDL, EXECUTE of a prepared statement, or a statement kind not
        # parsed here: everything
        return _EVERYTHING
    return frozenset({table_name(match.group(1))}), kind != "INSERT"


_EVERYTHING = (frozenset({ALL}), False)
