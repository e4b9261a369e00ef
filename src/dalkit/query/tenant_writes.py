"""Tenant scoping of the INSERT, UPDATE and DELETE statements a session runs on a tenant-scoped
table: the tenant column each writes, the rows each reaches.

- An INSERT's rows are stamped with the current tenant where they leave ``tenant_id`` out, and
  refused (`TenantMismatchError`) where they give it a value that is not provably the current
  tenant: another tenant, or a SQL expression (``func.lower(...)``, ``literal_column(...)``),
  whose value only the database knows. INSERT ... SELECT selects the tenant as a plain value,
  or leaves the column out and has it added.
- An UPDATE or DELETE reaches the current tenant's rows only (a condition on its target and on
  each table it reads besides, ``UPDATE ... FROM``); an UPDATE that sets ``tenant_id``, in its
  values or in the execution's parameters, sets it to the current tenant or is refused.
- Upserts and SQLite's ``OR REPLACE`` are `.tenant_upserts`'s.

What a statement reads in its subqueries is the walk's (`.tenant_walk`), and the criteria that
scope them are added by `dalkit.query.tenant`, which calls this module.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.base import _from_objects

from dalkit.query.soft_delete import UNKNOWN, inserted_rows
from dalkit.query.tenant_context import (
    TenantError,
    TenantMismatchError,
    UnscopedStatementError,
    required,
)
from dalkit.query.tenant_guard import TENANT_CHECKED, is_scoped_table
from dalkit.query.tenant_upserts import refuse_replace, scope_upsert
from dalkit.query.tenant_values import parameter_rows, plain_tenant, proven, refuse_tenant
from dalkit.query.tenant_walk import read_table, scoped_source

__all__ = [
    "check_keys",
    "check_tenant_rows",
    "scope_change",
    "scope_insert",
]

_COLUMN = "tenant_id"


def check_tenant_rows(current: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Refuse rows (plain values by key) that name a tenant other than ``current``."""
    for row in rows:
        given = row.get(_COLUMN, UNKNOWN)
        if given is not UNKNOWN and given is not None and str(given) != current:
            raise TenantMismatchError(f"a row names tenant {given!r} inside tenant {current!r}")


def check_keys(session: Session, model: type[Any], keys: Sequence[tuple[Any, ...]]) -> None:
    """Refuse a write by primary key (bulk_update) that reaches a row of another tenant."""
    mapper = sa.inspect(model, raiseerr=False)
    if mapper is None or not is_scoped_table(mapper.local_table):
        return
    current = required("bulk_update")
    if current is None or not keys:
        return
    pk = list(mapper.primary_key)
    target = pk[0] if len(pk) == 1 else sa.tuple_(*pk)
    values = [k[0] for k in keys] if len(pk) == 1 else list(keys)
    tenant_column = mapper.local_table.c.tenant_id
    for start in range(0, len(values), 500):
        query = sa.select(sa.literal(1)).where(
            target.in_(values[start : start + 500]), tenant_column != current
        )
        found = session.connection().execute(query.limit(1), execution_options=TENANT_CHECKED)
        if found.first() is not None:
            raise TenantMismatchError(f"a {model.__name__} row of another tenant was named")


def _key(key: Any) -> str:
    return key if isinstance(key, str) else str(getattr(key, "key", key))


# -- INSERT ------------------------------------------------------------------------------------
def scope_insert(state: ORMExecuteState, statement: sa.Insert, current: str) -> None:
    """Check and stamp an INSERT into a tenant-scoped table; its upsert clause is checked and
    confined to the tenant's rows."""
    table = typing.cast("sa.Table", statement.table)
    refuse_replace(statement, table)
    parameters = state.parameters
    if statement.select is not None:
        statement = _scope_insert_select(statement, current, parameters)
        rows: list[dict[str, Any]] = []
    else:
        what = f"an INSERT into {table.name}"
        for value in _inserted_tenants(statement, parameters):
            if not proven(value, current, parameters):
                refuse_tenant(value, current, what)
        rows = inserted_rows(statement, parameters)
        if any(_COLUMN not in row for row in rows):
            statement, parameters = _stamped(statement, parameters, current)
    state.statement = scope_upsert(state, statement, table, current, rows)
    state.parameters = parameters


def _inserted_tenants(statement: sa.Insert, parameters: Any) -> Iterator[Any]:
    """Each value the INSERT gives the tenant column, as written: from values(), each row of a
    multi-row values(), and the execution's parameters."""
    columns = list(typing.cast("sa.Table", statement.table).c)
    for key, value in (statement._values or {}).items():
        if _key(key) == _COLUMN:
            yield value
    for group in statement._multi_values:
        for row in group:
            items = row.items() if isinstance(row, Mapping) else zip(columns, row, strict=False)
            yield from (v for k, v in items if _key(k) == _COLUMN)
    for given in parameter_rows(parameters):
        if _COLUMN in given:
            yield given[_COLUMN]


def _scope_insert_select(statement: sa.Insert, current: str, parameters: Any) -> sa.Insert:
    """INSERT ... SELECT: the SELECT gives the tenant column the current tenant as a plain
    value, or leaves it out and has it added (its rows are the walk's: a Table of a
    tenant-scoped model in it is refused, its models get the criteria)."""
    table = typing.cast("sa.Table", statement.table)
    select = statement.select
    names = [_key(n) for n in statement._select_names or ()]
    if not isinstance(select, sa.Select):
        raise UnscopedStatementError(
            f"INSERT ... SELECT into {table.name}, tenant-scoped, from a UNION or SQL text, "
            "cannot be scoped: insert from one select() of the models"
        )
    if _COLUMN not in names:
        stamped = statement._generate()
        stamped._select_names = [*names, _COLUMN]
        stamped.select = select.add_columns(sa.literal(current, sa.String()))
        return stamped
    value = select.selected_columns[names.index(_COLUMN)]
    while isinstance(value, sa.Label):
        value = value.element
    if not proven(value, current, parameters):
        refuse_tenant(value, current, f"INSERT ... SELECT into {table.name}")
    return statement


def _stamped(statement: sa.Insert, parameters: Any, current: str) -> tuple[sa.Insert, Any]:
    """The INSERT and its parameters with ``tenant_id`` set wherever it is missing."""
    if isinstance(parameters, list):
        return statement, [{_COLUMN: current, **p} for p in parameters]
    if isinstance(parameters, dict) and parameters:
        return statement, {_COLUMN: current, **parameters}
    if statement._multi_values:
        # values([...]) cannot be given another column: the same statement, its rows stamped
        columns = list(typing.cast("sa.Table", statement.table).c)
        stamped = statement._generate()
        stamped._multi_values = tuple(
            [_with_tenant(row, columns, current) for row in group]
            for group in statement._multi_values
        )
        return stamped, parameters
    return statement.values(tenant_id=current), parameters


def _with_tenant(row: Any, columns: list[Any], current: str) -> dict[Any, Any]:
    if not isinstance(row, Mapping):  # values([(1, "x"), ...]): by the table's column order
        row = dict(zip(columns, row, strict=False))
    if any(_key(k) == _COLUMN for k in row):
        return dict(row)
    key = next((k for k in row if not isinstance(k, str)), None)
    column = key.table.c.tenant_id if key is not None else _COLUMN
    return {**row, column: current}


# -- UPDATE and DELETE -------------------------------------------------------------------------
def scope_change(state: ORMExecuteState, statement: sa.Update | sa.Delete, current: str) -> None:
    """Confine an UPDATE or DELETE of a tenant-scoped table to the current tenant's rows, and
    those of the tables it reads besides (or check the keys of an executemany one); refuse an
    UPDATE that moves a row to another tenant."""
    table = typing.cast("sa.Table", statement.table)
    parameters = state.parameters
    if isinstance(statement, sa.Update):
        refuse_replace(statement, table)
        what = f"an UPDATE of {table.name}"
        for key, value in (statement._values or {}).items():
            if _key(key) == _COLUMN and not proven(value, current, parameters):
                refuse_tenant(value, current, what)
        if not state.is_executemany:
            # a parameter named after a column sets it, as values() would
            for row in parameter_rows(parameters):
                if _COLUMN in row and not plain_tenant(row[_COLUMN], current):
                    refuse_tenant(row[_COLUMN], current, what)
    if state.is_executemany:
        mapper = state.bind_mapper
        params = typing.cast("list[dict[str, Any]]", parameters)
        if mapper is None or statement.whereclause is not None:
            raise TenantError(
                "an executemany UPDATE/DELETE of a tenant-scoped table with its own WHERE cannot "
                "be scoped: update by primary key, or one statement at a time"
            )
        names = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        check_tenant_rows(current, params)
        check_keys(state.session, mapper.class_, [tuple(p[n] for n in names) for p in params])
        return
    conditions = [table.c.tenant_id == current]
    conditions.extend(c.c.tenant_id == current for c in _read_besides(statement))
    state.statement = statement.where(*conditions)


def _read_besides(statement: sa.Update | sa.Delete) -> Iterator[Any]:
    """The tenant-scoped tables (or aliases) an UPDATE or DELETE reads besides its target, as
    SQLAlchemy finds them (``UPDATE ... FROM``, ``DELETE ... USING``): in its WHERE and, for an
    UPDATE, its values, outside any subquery."""
    consider: list[Any] = list(statement._where_criteria)
    if isinstance(statement, sa.Update):
        values = (statement._values or {}).values()
        consider.extend(v for v in values if isinstance(v, sa.ClauseElement))
    target = read_table(statement.table)._deannotate()
    seen: set[int] = set()
    pending = list(_from_objects(*consider))
    while pending:
        item = pending.pop()
        if isinstance(item, sa.Join):
            pending.extend([item.left, item.right])
        elif id(item) not in seen and item._deannotate() is not target and scoped_source(item):
            seen.add(id(item))
            yield item
