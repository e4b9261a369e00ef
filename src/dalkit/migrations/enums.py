"""PostgreSQL enum values: the differences between the models and the database (autogenerate
misses them), as an operation that renders the ALTER TYPE statements into a revision."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from sqlalchemy.engine import Connection

__all__ = ["AlterEnumValuesOp", "enum_differences"]

_ENUM_VALUES = sa.text(
    "SELECT n.nspname AS schema, t.typname AS name, e.enumlabel AS value "
    "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
    "JOIN pg_namespace n ON n.oid = t.typnamespace ORDER BY t.oid, e.enumsortorder"
)


class AlterEnumValuesOp(ops.MigrateOperation):
    """Values to add to and remove from a native enum type, to end with ``values``."""

    def __init__(
        self,
        name: str,
        schema: str | None,
        values: list[str],
        added: list[str],
        removed: list[str],
        columns: list[tuple[str, str]],
    ) -> None:
        self.name = name
        self.schema = schema
        self.values = values
        self.added = added
        self.removed = removed
        #: (table, column) pairs typed with this enum, for the recreate recipe
        self.columns = columns

    def reverse(self) -> AlterEnumValuesOp:
        before = [v for v in self.values if v not in self.added] + self.removed
        return AlterEnumValuesOp(
            self.name, self.schema, before, self.removed, self.added, self.columns
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_enum_values", self.name, tuple(self.added), tuple(self.removed))

    def describe(self) -> str:
        """One line for SchemaDriftError."""
        parts = []
        if self.added:
            parts.append(f"values missing in the database: {', '.join(self.added)}")
        if self.removed:
            parts.append(f"values only in the database: {', '.join(self.removed)}")
        return f"enum type {self.name}: " + "; ".join(parts)


def enum_differences(
    connection: Connection, metadatas: Iterable[sa.MetaData]
) -> list[AlterEnumValuesOp]:
    """The native enums of ``metadatas`` whose values differ from the database's (PostgreSQL)."""
    if connection.dialect.name != "postgresql":
        return []
    wanted: dict[str, tuple[list[str], str | None, list[tuple[str, str]]]] = {}
    for metadata in metadatas:
        for table in metadata.tables.values():
            for column in table.columns:
                enum = column.type
                if isinstance(enum, sa.Enum) and enum.native_enum and enum.name:
                    entry = wanted.setdefault(enum.name, (list(enum.enums), enum.schema, []))
                    entry[2].append((table.name, column.name))
    existing: dict[str, list[str]] = {}
    for row in connection.execute(_ENUM_VALUES).mappings():
        existing.setdefault(row["name"], []).append(row["value"])
    changes = []
    for name, (values, schema, columns) in sorted(wanted.items()):
        if name not in existing:
            continue  # a new type: CREATE TYPE comes with the table
        added = [v for v in values if v not in existing[name]]
        removed = [v for v in existing[name] if v not in values]
        if added or removed:
            changes.append(AlterEnumValuesOp(name, schema, values, added, removed, columns))
    return changes


@renderers.dispatch_for(AlterEnumValuesOp)
def _render(context: AutogenContext, operation: AlterEnumValuesOp) -> str:
    quoted = ".".join(_ident(part) for part in (operation.schema, operation.name) if part)
    if not operation.removed:
        return "\n".join(
            f"op.execute({f'ALTER TYPE {quoted} ADD VALUE IF NOT EXISTS {_literal(v)}'!r})"
            for v in operation.added
        )
    # PostgreSQL cannot drop an enum value: recreate the type (the linter flags this)
    labels = ", ".join(_literal(v) for v in operation.values)
    old = _ident(f"{operation.name}_old")
    statements = [
        f"ALTER TYPE {quoted} RENAME TO {old}",
        f"CREATE TYPE {quoted} AS ENUM ({labels})",
    ]
    statements += [
        f"ALTER TABLE {_ident(table)} ALTER COLUMN {_ident(column)} TYPE {quoted} "
        f"USING {_ident(column)}::text::{quoted}"
        for table, column in operation.columns
    ]
    statements.append(f"DROP TYPE {old}")
    return "\n".join(f"op.execute({statement!r})" for statement in statements)


def _ident(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
