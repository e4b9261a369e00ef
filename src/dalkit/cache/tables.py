"""Which tables a statement reads (joins, subqueries, CTEs, eager relationship loads,
association tables) and which tables a write reaches (its target, plus the tables whose
foreign keys cascade from it)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import sqlparse
from sqlalchemy import Table, inspect
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import TextClause

__all__ = ["ALL", "dependents", "table_name", "tables_read", "text_targets"]

#: the name standing for every table: bumped by DDL and by writes whose target is unknown
ALL = "*"

_EAGER = frozenset({"joined", "selectin", "subquery", "immediate"})
_CASCADING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|merge|truncate|create|drop|alter|replace|copy|grant|revoke|"
    r"vacuum|reindex|cluster|comment|lock|call|do|refresh|import|attach|detach)\b",
    re.IGNORECASE,
)
_TEMP_TABLE = re.compile(r"^\s*create\s+(?:global\s+|local\s+)?temp(?:orary)?\s+table\b", re.I)
_TARGET = {
    "INSERT": re.compile(r"^\s*insert\s+(?:or\s+\w+\s+)?into\s+([\w.\"]+)", re.IGNORECASE),
    "UPDATE": re.compile(r"^\s*update\s+(?:only\s+)?([\w.\"]+)", re.IGNORECASE),
    "DELETE": re.compile(r"^\s*delete\s+from\s+(?:only\s+)?([\w.\"]+)", re.IGNORECASE),
}


def table_name(table: Any) -> str:
    """The name the cache knows a table by.

    Args:
        table: A Table (or anything with ``name`` and ``schema``).

    Returns:
        ``schema.name`` or ``name``: the same string for a Table and for a parsed target.
    """
    schema = getattr(table, "schema", None)
    return f"{schema}.{table.name}" if schema else str(table.name)


def tables_read(statement: Any) -> frozenset[str]:
    """Every table a statement reads.

    Args:
        statement: A Core or ORM select (or any executable).

    Returns:
        Its tables, including those its eager relationship loads and loader options reach;
        empty for a text statement (which must then declare its tables).
    """
    if isinstance(statement, TextClause):
        return frozenset()
    found: set[str] = set()
    mappers: list[Mapper[Any]] = []
    for element in visitors.iterate(statement):
        if isinstance(element, Table):
            found.add(table_name(element))
        entity = getattr(element, "_annotations", {}).get("parententity")
        if entity is not None:
            mappers.append(entity.mapper)
    for description in getattr(statement, "column_descriptions", ()):
        entity = description.get("entity")
        if entity is not None:
            mappers.append(inspect(entity).mapper)
    for option in getattr(statement, "_with_options", ()):
        mappers.extend(_option_mappers(option))
        found.update(_option_secondaries(option))
    seen: set[Mapper[Any]] = set()
    while mappers:
        mapper = mappers.pop()
        if mapper in seen:
            continue
        seen.add(mapper)
        found.update(table_name(t) for t in mapper.tables)
        for relationship in mapper.relationships:
            if relationship.lazy in _EAGER:
                mappers.append(relationship.mapper)
                if relationship.secondary is not None:
                    found.update(_from_clause_tables(relationship.secondary))
    return frozenset(found)


def _option_mappers(option: Any) -> Iterable[Mapper[Any]]:
    """Mappers named anywhere in a loader option's paths (``selectinload(User.posts)``)."""
    for path in _option_paths(option):
        for item in path:
            if isinstance(item, Mapper):
                yield item
            elif isinstance(item, RelationshipProperty):
                yield item.mapper
            else:
                mapper = getattr(item, "mapper", None)
                if isinstance(mapper, Mapper):
                    yield mapper


def _option_secondaries(option: Any) -> Iterable[str]:
    for path in _option_paths(option):
        for item in path:
            if isinstance(item, RelationshipProperty) and item.secondary is not None:
                yield from _from_clause_tables(item.secondary)


def _option_paths(option: Any) -> Iterable[Any]:
    path = getattr(option, "path", None)
    if path is not None:
        yield getattr(path, "path", path)
    for child in getattr(option, "context", ()) or ():
        yield from _option_paths(child)


def _from_clause_tables(clause: Any) -> set[str]:
    return {table_name(e) for e in visitors.iterate(clause) if isinstance(e, Table)}


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
                if cascades and fk.column.table is target:
                    found.add(table_name(other))
                    pending.append(other)
                    break
    return found


def text_targets(sql: str) -> frozenset[str] | None:
    """The tables a raw SQL text writes.

    Args:
        sql: The statement as sent to the database.

    Returns:
        The target of a plain INSERT, UPDATE or DELETE; ``{ALL}`` for DDL or anything else
        that may write; None (or empty) when it writes nothing.
    """
    if _WRITE_WORDS.search(sql) is None:
        return None
    statements = [s for s in sqlparse.parse(sql) if str(s).strip()]
    if len(statements) != 1:
        return frozenset({ALL})
    statement = statements[0]
    kind = statement.get_type()  # type: ignore[no-untyped-call]
    stripped = sqlparse.format(str(statement), strip_comments=True).strip()
    if kind == "SELECT" and not re.search(r"\b(insert|update|delete)\b", stripped, re.I):
        return None
    if _TEMP_TABLE.match(stripped):
        return None  # private to the connection: no other reader can have cached it
    pattern = _TARGET.get(kind)
    match = pattern.match(stripped) if pattern is not None else None
    if match is None:
        # a writable CTE, DDL, or a statement kind not parsed here: everything
        return frozenset({ALL})
    return frozenset({match.group(1).replace('"', "")})
