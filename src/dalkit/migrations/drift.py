"""What differs between the models and a database (for ``check()``), and a comparable snapshot
of a database's schema (for the round-trip checks and before/after comparisons)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from alembic.autogenerate import produce_migrations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from dalkit.migrations.enums import enum_differences

__all__ = ["describe_diff", "differences", "schema_snapshot"]


def differences(
    connection: Connection, metadatas: Sequence[sa.MetaData], options: dict[str, Any]
) -> list[str]:
    """One line per difference between ``metadatas`` and the database, enums included."""
    context = MigrationContext.configure(connection, opts=options)
    # Alembic accepts a sequence of MetaData though its annotation says one
    script = produce_migrations(context, cast(sa.MetaData, list(metadatas)))
    assert script.upgrade_ops is not None
    found = [describe_diff(diff) for diff in script.upgrade_ops.as_diffs()]
    found += [change.describe() for change in enum_differences(connection, metadatas)]
    if connection.in_transaction():
        connection.commit()
    return found


def describe_diff(diff: Any) -> str:
    """Alembic's diff tuple (or list of tuples for a column) as a sentence."""
    if isinstance(diff, list):
        return "; ".join(describe_diff(part) for part in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        where = "missing in the database" if kind == "add_table" else "only in the database"
        return f"table {diff[1].name}: {where}"
    if kind in ("add_column", "remove_column"):
        where = "missing in the database" if kind == "add_column" else "only in the database"
        return f"column {diff[2]}.{diff[3].name}: {where}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        item = diff[1]
        table = getattr(getattr(item, "table", None), "name", "?")
        where = "missing in the database" if kind.startswith("add") else "only in the database"
        return f"{kind.split('_')[1]} {item.name} on {table}: {where}"
    if kind.startswith("modify_"):
        _, _schema, table, column, _info, db_value, model_value = diff
        what = kind.removeprefix("modify_").replace("_", " ")
        if what == "default":
            what = "server default"
        return (
            f"column {table}.{column}: {what} is {_show(db_value)} in the database, "
            f"{_show(model_value)} in the models"
        )
    if kind in ("add_fk", "remove_fk"):
        where = "missing in the database" if kind == "add_fk" else "only in the database"
        return f"foreign key {diff[1].name} on {diff[1].parent.name}: {where}"
    return " ".join(str(part) for part in diff)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    text = getattr(value, "arg", value)
    text = getattr(text, "text", text)
    return repr(str(text)) if not isinstance(value, sa.types.TypeEngine) else str(value)


def schema_snapshot(connection: Connection) -> dict[str, Any]:
    """Tables, columns, keys, indexes (and PostgreSQL enum types) as plain comparable data."""
    inspector = sa.inspect(connection)
    tables: dict[str, Any] = {}
    for name in sorted(inspector.get_table_names()):
        tables[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], _default(c.get("default")))
                for c in inspector.get_columns(name)
            ],
            "pk": inspector.get_pk_constraint(name).get("constrained_columns"),
            "fks": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(name)
            ),
            "indexes": sorted(
                (i["name"] or "", tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
            "unique": sorted(
                tuple(str(c) for c in u["column_names"])
                for u in inspector.get_unique_constraints(name)
            ),
        }
    snapshot: dict[str, Any] = {"tables": tables}
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            sa.text(
                "SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e "
                "ON e.enumtypid = t.oid ORDER BY t.typname, e.enumsortorder"
            )
        )
        enums: dict[str, list[str]] = {}
        for name, label in rows:
            enums.setdefault(name, []).append(label)
        snapshot["enums"] = enums
        invalid = connection.execute(
            sa.text("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        ).scalar()
        snapshot["invalid_indexes"] = invalid
    if connection.in_transaction():
        connection.commit()
    return snapshot


def _default(value: Any) -> str | None:
    return None if value is None else str(value)
