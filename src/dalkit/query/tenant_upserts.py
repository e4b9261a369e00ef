"""Tenant scoping of the writes into a tenant-scoped table that can change a row they did not
name: ``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL, SQLite) and SQLite's ``OR REPLACE``.

An upsert's conflict target is resolved to columns: ``index_elements``, a constraint object, or
a constraint's name, looked up in the table's metadata and then in the database (a primary
key's or unique constraint's server name, such as ``<table>_pkey``). Its rows' keys are checked
against other tenants' rows (`TenantMismatchError` when one is met), its ``DO UPDATE`` is given
``WHERE <table>.tenant_id = <current>`` (a row another tenant inserts after the check is left
alone), and its ``set_`` may give ``tenant_id`` the current tenant or ``excluded.tenant_id``
only. A ``DO UPDATE`` whose target cannot be resolved (none given, an unknown name), an
``ON CONFLICT`` clause of another kind, and ``OR REPLACE`` (which deletes whatever row its keys
meet) are refused with `UnscopedStatementError`. ``DO NOTHING`` changes no row: it needs no
target, and one it names is checked the same way.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.dml import OnConflictClause as PostgresOnConflict
from sqlalchemy.dialects.postgresql.dml import OnConflictDoUpdate as PostgresDoUpdate
from sqlalchemy.dialects.sqlite.dml import OnConflictClause as SqliteOnConflict
from sqlalchemy.dialects.sqlite.dml import OnConflictDoUpdate as SqliteDoUpdate
from sqlalchemy.orm import ORMExecuteState

from dalkit.query.soft_delete import UNKNOWN, conflict_columns
from dalkit.query.tenant_context import TenantMismatchError, UnscopedStatementError
from dalkit.query.tenant_guard import TENANT_CHECKED
from dalkit.query.tenant_values import proven

__all__ = ["refuse_replace", "scope_upsert"]

_REPLACE = re.compile(r"\bREPLACE\b", re.IGNORECASE)


def refuse_replace(statement: sa.Insert | sa.Update, table: sa.Table) -> None:
    """Refuse SQLite's ``INSERT OR REPLACE`` / ``UPDATE OR REPLACE`` of a tenant-scoped table:
    a row meeting another on any unique key deletes it, whoever's it is."""
    for prefix, _ in statement._prefixes:
        if _REPLACE.search(str(getattr(prefix, "text", prefix))):
            raise UnscopedStatementError(
                f"OR REPLACE into {table.name}, tenant-scoped, would delete whatever row its "
                "keys meet, another tenant's too: use an upsert naming its conflict columns "
                "(on_conflict_do_update(index_elements=[...])), or a repository's upsert()"
            )


def scope_upsert(
    state: ORMExecuteState,
    statement: sa.Insert,
    table: sa.Table,
    current: str,
    rows: list[dict[str, Any]],
) -> sa.Insert:
    """``statement``, an INSERT into a tenant-scoped table, checked as an upsert and confined
    to the current tenant's rows; itself when it has no ON CONFLICT clause."""
    clause = getattr(statement, "_post_values_clause", None)
    if clause is None:
        return statement
    if not isinstance(clause, PostgresOnConflict | SqliteOnConflict):
        raise UnscopedStatementError(
            f"an INSERT into {table.name}, tenant-scoped, with a {type(clause).__name__} clause "
            "cannot be scoped: use ON CONFLICT with its conflict columns"
        )
    updating = isinstance(clause, PostgresDoUpdate | SqliteDoUpdate)
    connection = state.session.connection()
    columns = conflict_columns(statement, table, connection)
    if columns is None and updating:
        raise UnscopedStatementError(
            f"an upsert into {table.name}, tenant-scoped, whose conflict target cannot be "
            "resolved to columns (none given, or a constraint name neither the model nor the "
            "database knows) could update another tenant's row: name the columns, "
            "on_conflict_do_update(index_elements=[...])"
        )
    if columns:
        _refuse_meeting(connection, statement, table, columns, rows, current)
    if not isinstance(clause, PostgresDoUpdate | SqliteDoUpdate):
        return statement  # DO NOTHING
    _check_set(clause, statement, current, state.parameters)
    confined = clause._clone()
    mine = statement.table.c.tenant_id == current  # the row met, in DO UPDATE's WHERE
    where = clause.update_whereclause
    confined.update_whereclause = mine if where is None else sa.and_(where, mine)
    scoped = statement._generate()
    scoped._post_values_clause = confined
    return scoped


def _refuse_meeting(
    connection: Any,
    statement: sa.Insert,
    table: sa.Table,
    columns: list[sa.Column[Any]],
    rows: list[dict[str, Any]],
    current: str,
) -> None:
    """Raise when a row's conflict key is another tenant's row's."""
    keys = [tuple(r.get(c.key, UNKNOWN) for c in columns) for r in rows]
    keys = [k for k in keys if UNKNOWN not in k]
    target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        values = [k[0] for k in chunk] if len(columns) == 1 else chunk
        query = sa.select(sa.literal(1)).where(target.in_(values), table.c.tenant_id != current)
        if connection.execute(query.limit(1), execution_options=TENANT_CHECKED).first():
            raise TenantMismatchError(f"an upsert into {table.name} meets a row of another tenant")


def _check_set(clause: Any, statement: sa.Insert, current: str, parameters: Any) -> None:
    """``DO UPDATE SET tenant_id = ...`` moves the row met: to the current tenant or the
    inserted row's (``excluded.tenant_id``, stamped or checked), or refused."""
    values = clause.update_values_to_set
    items = values.items() if isinstance(values, Mapping) else values
    for key, value in items:
        name = key if isinstance(key, str) else getattr(key, "key", None)
        if name != "tenant_id" or _is_excluded(value, statement):
            continue
        if proven(value, current, parameters):
            continue
        raise TenantMismatchError(
            f"an upsert into {typing.cast('sa.Table', statement.table).name} sets tenant_id "
            f"to what is not provably tenant {current!r}: leave tenant_id out of set_, or set it "
            "to excluded.tenant_id"
        )


def _is_excluded(value: Any, statement: sa.Insert) -> bool:
    source = getattr(value, "table", None)
    return (
        isinstance(source, sa.Alias)
        and str(source.name) == "excluded"
        and source.element._deannotate() is typing.cast("sa.Table", statement.table)._deannotate()
        and getattr(value, "key", None) == "tenant_id"
    )
