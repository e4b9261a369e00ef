"""The schema as index advice reads it: each table's columns, indexes, the column lists that can
serve a lookup and its foreign keys; which index serves every lookup of another; and the DDL
that creates or drops an index, identifiers quoted."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["Ddl", "Table", "read_schema", "serves"]


@dataclasses.dataclass
class Table:
    """One table of the schema.

    Attributes:
        name: The table's name.
        columns: Its column names.
        keys: The column lists that can serve a lookup.
        indexes: Its indexes as SQLAlchemy's inspector reflects them (expressions left out).
        foreign_keys: The column lists of its foreign keys.
    """

    name: str
    columns: set[str]
    # column lists of every full index, primary key and unique constraint: what can serve a
    # lookup (a partial index serves only the statements that repeat its WHERE)
    keys: list[tuple[str, ...]]
    indexes: list[dict[str, Any]]
    foreign_keys: list[tuple[str, ...]]

    def covered(self, columns: tuple[str, ...]) -> bool:
        """Whether a key serves lookups by ``columns``.

        Args:
            columns: Column names, in order.

        Returns:
            True when a key's columns start with them.
        """
        return any(key[: len(columns)] == columns for key in self.keys)


def serves(index: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether ``other`` serves every lookup ``index`` serves: its columns start with those of
    ``index``, with the same method, operator classes and order, it has no WHERE or the same
    one, and it covers their INCLUDE columns. A hash, GIN or ``text_pattern_ops`` index on a
    column serves other lookups than a plain one, and a partial index only the statements that
    repeat its WHERE.

    Args:
        index: A reflected index.
        other: Another one of the same table.

    Returns:
        True when ``index`` is redundant beside ``other``.
    """
    columns, options = index["column_names"], index.get("dialect_options", {})
    others = other.get("dialect_options", {})
    if other["column_names"][: len(columns)] != columns:
        return False
    if _option(options, "postgresql_using") != _option(others, "postgresql_using"):
        return False
    for key in ("postgresql_where", "sqlite_where"):  # a full index serves a partial one's
        if _option(others, key) not in ("", _option(options, key)):
            return False
    ops, other_ops = options.get("postgresql_ops") or {}, others.get("postgresql_ops") or {}
    sorting, other_sorting = index.get("column_sorting") or {}, other.get("column_sorting") or {}
    if any(
        ops.get(c) != other_ops.get(c) or sorting.get(c) != other_sorting.get(c) for c in columns
    ):
        return False
    reach = {*other["column_names"], *(others.get("postgresql_include") or ())}
    return set(options.get("postgresql_include") or ()) <= reach


def _option(options: dict[str, Any], key: str) -> str:
    # a predicate may be a TextClause, whose truth SQLAlchemy refuses to tell
    value = options.get(key)
    return "" if value is None else str(value)


def _partial(index: dict[str, Any]) -> bool:
    options = index.get("dialect_options", {})
    return bool(_option(options, "postgresql_where") or _option(options, "sqlite_where"))


def read_schema(connection: Connection) -> dict[str, Table]:
    """The tables of the connection's default schema.

    Args:
        connection: A PostgreSQL or SQLite connection.

    Returns:
        Each table by name.
    """
    inspector = sa.inspect(connection)
    tables = {}
    for name in inspector.get_table_names():
        indexes: list[dict[str, Any]] = [
            dict(i) for i in inspector.get_indexes(name) if None not in i["column_names"]
        ]
        keys = [tuple(str(c) for c in i["column_names"]) for i in indexes if not _partial(i)]
        primary = inspector.get_pk_constraint(name).get("constrained_columns") or []
        keys += [tuple(primary)] if primary else []
        keys += [tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)]
        tables[name] = Table(
            name,
            {c["name"] for c in inspector.get_columns(name)},
            keys,
            indexes,
            [tuple(fk["constrained_columns"]) for fk in inspector.get_foreign_keys(name)],
        )
    return tables


class Ddl:
    """The DDL of index advice, for the connection's database (``CONCURRENTLY`` on PostgreSQL).

    Args:
        connection: The connection advised.
    """

    def __init__(self, connection: Connection) -> None:
        self._quote = connection.dialect.identifier_preparer.quote
        self._concurrently = " CONCURRENTLY" if connection.dialect.name == "postgresql" else ""

    def create(self, table: str, columns: tuple[str, ...]) -> str:
        """``CREATE INDEX`` on ``table`` (``columns``).

        Args:
            table: The table.
            columns: The columns, in order.

        Returns:
            The statement.
        """
        name = f"ix_{table}_{'_'.join(columns)}"[:63]
        cols = ", ".join(self._quote(c) for c in columns)
        return (
            f"CREATE INDEX{self._concurrently} {self._quote(name)} ON {self._quote(table)} ({cols})"
        )

    def drop(self, index: str) -> str:
        """``DROP INDEX`` of ``index``.

        Args:
            index: The index's name.

        Returns:
            The statement.
        """
        return f"DROP INDEX{self._concurrently} {self._quote(index)}"
