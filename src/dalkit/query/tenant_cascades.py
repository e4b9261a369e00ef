"""Writes of a table that belongs to no tenant which the database carries into tenant-scoped
rows through foreign keys: a ``DELETE`` whose ``ON DELETE`` actions (``CASCADE``, ``SET NULL``,
``SET DEFAULT``) reach a tenant-scoped table, directly or through tables that ``ON DELETE
CASCADE`` deletes from in turn, and PostgreSQL's ``TRUNCATE ... CASCADE``, which empties every
table referencing those it names, whatever their ``ON DELETE``; so does an ``UPDATE`` setting
the columns a tenant-scoped table references with an ``ON UPDATE`` action. Such a statement names no
tenant-scoped table, yet it deletes or changes the rows of every tenant: `.tenant_guard`
refuses it as it refuses one naming such a table. Found from the metadata of the tenant-scoped
tables, walking their foreign keys up to the tables they reference."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlparse import tokens as T

from dalkit.query.sql_tokens import code_tokens, identifier, written_tables

__all__ = ["DELETE_WORD", "reached_scoped"]

_SET_ENDS = frozenset({"WHERE", "FROM", "RETURNING"})

#: a word of a statement that may delete rows or change keys: only such a one is read further
DELETE_WORD = re.compile(r"\b(?:delete|truncate|merge|update)\b", re.IGNORECASE)
_REMOVING = re.compile(r"\b(?:delete|truncate|merge)\b", re.IGNORECASE)
_UPDATE_WORD = re.compile(r"\bupdate\b", re.IGNORECASE)
_TRUNCATE_WORD = re.compile(r"\btruncate\b", re.IGNORECASE)
_ACTING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})
# (the registry walked, its metadatas' sizes, those metadatas, what a DELETE reaches, what a
# TRUNCATE does, what an UPDATE of the keys named does)
_Reach = dict[str, tuple[sa.Table, str]]
_known: tuple[object, tuple[int, ...], tuple[sa.MetaData, ...], _Reach, _Reach, Any] | None = None


def reached_scoped(
    sql: str, scoped: Mapping[str, tuple[sa.Table, ...]]
) -> tuple[sa.Table, str] | None:
    """The table belonging to no tenant that ``sql`` deletes from, truncates, or sets the
    referenced columns of, whose foreign keys carry that into a tenant-scoped table's rows, and
    that table's name; None if none.

    Args:
        sql: The statement's SQL text, compiled or raw.
        scoped: The tenant-scoped tables by lower-case name (`.tenant_guard.registry`).

    Returns:
        ``(table, scoped table's name)``, or None.
    """
    if not DELETE_WORD.search(sql):
        return None
    deleting, truncating, updating = _reaching(scoped)
    reach = truncating if _TRUNCATE_WORD.search(sql) else deleting if _REMOVING.search(sql) else {}
    keyed = updating if _UPDATE_WORD.search(sql) else {}
    if not reach and not keyed:
        return None
    # only a statement whose text names a reaching table is parsed: sqlparse costs about a
    # millisecond a statement, and refuses one of more than 10,000 tokens (the relay's UPDATE
    # of 32,767 ids), which names no such table
    lowered = sql.lower()
    if not any(name in lowered for name in (*reach, *keyed)):
        return None
    for _schema, name in written_tables(sql):
        found = reach.get(name.lower())
        if found is not None:
            return found
        moved = keyed.get(name.lower())
        if moved is not None and not moved[2].isdisjoint(_set_columns(sql)):
            return moved[0], moved[1]
    return None


def _set_columns(sql: str) -> set[str]:
    """The columns the SET clauses of ``sql`` assign (lower case), subqueries left out."""
    found: set[str] = set()
    depth, setting, previous = 0, False, None
    for token in code_tokens(sql):
        word = str(token.value).upper()
        if token.ttype in T.Punctuation and word in "()":
            depth += 1 if word == "(" else -1
        elif depth == 0 and token.ttype in T.Keyword and word in _SET_ENDS | {"SET"}:
            setting = word == "SET"
        elif setting and depth == 0 and word == "=" and previous is not None:
            found.add(previous.lower())
        previous = identifier(token) if token.ttype not in T.Punctuation else None
    return found


def _reaching(
    scoped: Mapping[str, tuple[sa.Table, ...]],
) -> tuple[_Reach, _Reach, dict[str, tuple[sa.Table, str, frozenset[str]]]]:
    """By lower-case name, the tables whose DELETE, whose TRUNCATE ... CASCADE, and whose
    UPDATE of the columns named (ON UPDATE actions) reach a tenant-scoped table; remembered
    until a table is scoped or added to their metadata."""
    global _known
    known = _known
    if (
        known is not None
        and known[0] is scoped
        and known[1] == tuple(len(metadata.tables) for metadata in known[2])
    ):
        return known[3], known[4], known[5]
    tables = {table for found in scoped.values() for table in found}
    metadatas = tuple({table.metadata for table in tables})
    sizes = tuple(len(metadata.tables) for metadata in metadatas)
    known = (scoped, sizes, metadatas, _walk(tables, False), _walk(tables, True), _keyed(tables))
    _known = known
    return known[3], known[4], known[5]


def _keyed(scoped: Collection[sa.Table]) -> dict[str, tuple[sa.Table, str, frozenset[str]]]:
    """The tables a tenant-scoped one references with an ON UPDATE action: changing the columns
    referenced changes its rows, every tenant's."""
    found: dict[str, tuple[sa.Table, str, frozenset[str]]] = {}
    for child in scoped:
        for constraint in child.foreign_key_constraints:
            try:
                parent = constraint.referred_table
            except sa.exc.NoReferenceError:
                continue
            if parent in scoped or (constraint.onupdate or "").upper() not in _ACTING:
                continue
            columns = frozenset(e.column.name.lower() for e in constraint.elements)
            known = found.get(parent.name.lower())
            found[parent.name.lower()] = (
                parent,
                child.name,
                columns | (known[2] if known else frozenset()),
            )
    return found


def _walk(scoped: Collection[sa.Table], truncating: bool) -> _Reach:
    """Up the foreign keys from the tenant-scoped tables, through those that carry a deletion
    of the table they reference down to them."""
    found: _Reach = {}
    seen = set(scoped)
    pending = [(table, table.name) for table in scoped]
    while pending:
        child, reached = pending.pop()
        for constraint in child.foreign_key_constraints:
            try:
                parent = constraint.referred_table
            except sa.exc.NoReferenceError:
                continue  # a table not defined yet: the walk runs again when it is
            action = (constraint.ondelete or "").upper()
            carries = action in _ACTING if child in scoped else action == "CASCADE"
            if parent in seen or not (truncating or carries):
                continue
            seen.add(parent)
            found[parent.name.lower()] = (parent, reached)
            pending.append((parent, reached))
    return found
