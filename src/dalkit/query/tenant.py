"""Tenant scoping: the `TenantScoped` mixin, the `tenant()` context (`.tenant_context`), and
one ``do_orm_execute``/``before_flush`` pair on the ``Session`` class that makes every read,
relationship load, statement and flush of such models see and write the current tenant's rows
only; without a tenant, they raise `TenantRequiredError` instead of returning every tenant's
rows. What reaches the database around the session (raw SQL, Core on a connection) is refused
by `.tenant_guard`, which the listeners tell what they scoped. Installed when the first model
gets the mixin.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import (
    Mapped,
    ORMExecuteState,
    Session,
    UOWTransaction,
    mapped_column,
    with_loader_criteria,
)
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.selectable import CompoundSelect, TextualSelect

from dalkit.engine.session import add_identity_check
from dalkit.engine.statement_hooks import add_before_everywhere
from dalkit.query import tenant_guard
from dalkit.query.plain_entities import select_neutral
from dalkit.query.plain_inserts import flush_neutral
from dalkit.query.running_flush import flush_began
from dalkit.query.soft_delete import UNKNOWN, conflict_columns, inserted_rows
from dalkit.query.tenant_context import (
    TenantError,
    TenantMismatchError,
    TenantRequiredError,
    UnscopedStatementError,
    current_tenant,
    every_tenant,
    required,
    scoping_off,
    tenant,
)
from dalkit.query.tenant_guard import (
    CHECKED_OPTION,
    TENANT_CHECKED,
    is_scoped_table,
    leaves_bare,
)

__all__ = [
    "TenantError",
    "TenantMismatchError",
    "TenantRequiredError",
    "TenantScoped",
    "UnscopedStatementError",
    "check_tenant_rows",
    "current_tenant",
    "every_tenant",
    "is_tenant_scoped",
    "stamp_rows",
    "tenant",
]


class TenantScoped:
    """Mix into a declarative model to give it ``tenant_id``: inside ``with dalkit.tenant(t):``
    every read of it sees tenant ``t``'s rows only and every write is stamped with (or checked
    against) ``t``. Tenant ids are stored as text."""

    tenant_id: Mapped[str] = mapped_column(sa.String(64), index=True, nullable=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = getattr(cls, "__table__", None)
        if isinstance(table, sa.Table):  # mapped by now; an abstract base has none
            tenant_guard.register(table)
        install()


def is_tenant_scoped(model: object) -> bool:
    return isinstance(model, type) and issubclass(model, TenantScoped)


# -- rows the repositories write through the driver -------------------------------------------
def stamp_rows(model: type[Any], rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """``rows`` for a bulk insert of ``model``: each with the current tenant as ``tenant_id``
    (a row naming another tenant raises); ``rows`` themselves for a model not scoped."""
    if not is_tenant_scoped(model):
        return rows
    current = required("bulk_insert")
    if current is None:
        return rows
    check_tenant_rows(current, rows)
    return [{**row, "tenant_id": current} for row in rows]


def check_tenant_rows(current: str, rows: Iterable[Mapping[str, Any]]) -> None:
    for row in rows:
        given = row.get("tenant_id", UNKNOWN)
        if given is not UNKNOWN and given is not None and str(given) != current:
            raise TenantMismatchError(f"a row names tenant {given!r} inside tenant {current!r}")


def check_keys(session: Session, model: type[Any], keys: Sequence[tuple[Any, ...]]) -> None:
    """Refuse a write by primary key (bulk_update) that reaches a row of another tenant."""
    if not is_tenant_scoped(model):
        return
    current = required("bulk_update")
    if current is None or not keys:
        return
    pk = list(sa.inspect(model).primary_key)
    target = pk[0] if len(pk) == 1 else sa.tuple_(*pk)
    values = [k[0] for k in keys] if len(pk) == 1 else list(keys)
    for start in range(0, len(values), 500):
        query = sa.select(sa.literal(1)).where(
            target.in_(values[start : start + 500]), model.tenant_id != current
        )
        found = session.connection().execute(query.limit(1), execution_options=TENANT_CHECKED)
        if found.first() is not None:
            raise TenantMismatchError(f"a {model.__name__} row of another tenant was named")


# -- statements --------------------------------------------------------------------------------
def _on_execute(state: ORMExecuteState) -> None:
    statement = state.statement
    if isinstance(statement, sa.TextClause | TextualSelect | CompoundSelect):
        # text, and a UNION of selects, cannot be given the criteria: left unscoped, the
        # guard refuses them when they name a tenant-scoped table
        return
    if state.is_column_load:  # an object's own row, by its identity
        scoped = True
    elif state.is_select:
        scoped = _scope_select(
            state, statement._propagate_attrs.get("compile_state_plugin") == "orm"
        )
    elif state.is_insert:
        scoped = _scope_insert(state, typing.cast("sa.Insert", statement))
    elif state.is_update or state.is_delete:
        scoped = _scope_change(state, typing.cast("sa.Update | sa.Delete", statement))
    else:
        scoped = False
    if scoped and not scoping_off():
        # what the guard reads: a statement left unmarked is looked at by its text
        state.update_execution_options(**{CHECKED_OPTION: True})


def _criteria(current: str) -> Any:
    # ``current`` is a closure variable: SQLAlchemy binds it as a parameter of the cached lambda
    return with_loader_criteria(
        TenantScoped, lambda cls: cls.tenant_id == current, include_aliases=True
    )


def _scoped_mapper(mapper: Any) -> bool:
    return is_tenant_scoped(mapper.class_)


@functools.cache
def _reaches_scoped(mapper: Any) -> bool:
    """Whether loading ``mapper``'s entities can load tenant-scoped ones, through any chain of
    relationships (cached per mapper: mappers are configured once)."""
    seen: set[Any] = set()
    pending = [mapper]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if is_tenant_scoped(current.class_):
            return True
        pending.extend(r.mapper for r in current.relationships)
    return False


def _scope_select(state: ORMExecuteState, orm: bool) -> bool:
    """Add the current tenant's criteria; whether the select is scoped."""
    statement = typing.cast("sa.Select[Any]", state.statement)
    if orm:
        if scoping_off():
            return True
        mappers = state.all_mappers
        if mappers and not any(_reaches_scoped(m) for m in mappers):
            # nothing it loads can be tenant-scoped: leave the statement (and the entities it
            # loads, which a cache may pickle) without the criteria option
            return False
        scoped = any(is_tenant_scoped(m.class_) for m in state.all_mappers)
        current = current_tenant()
        if current is None:
            if scoped:
                required("a read")
            # joined tenant-scoped entities then match no row: nothing leaks
            state.statement = statement.options(
                with_loader_criteria(
                    TenantScoped, lambda cls: cls.tenant_id.is_(None), include_aliases=True
                )
            )
            return True
        state.statement = statement.options(_criteria(current))
        return not leaves_bare(state.statement, orm)  # the key SQLAlchemy reuses
    conditions = list(_core_conditions(statement.get_final_froms(), outer=False))
    if not conditions:
        return False
    current = required("a read")
    if current is not None:
        state.statement = statement.where(*(c(current) for c in conditions))
    return not leaves_bare(state.statement, orm)  # the key SQLAlchemy reuses


def _core_conditions(froms: Iterable[Any], *, outer: bool) -> Iterator[Any]:
    """A condition builder for each tenant-scoped table in the FROM list (through joins); the
    optional side of an outer join keeps its unmatched rows (NULL tenant)."""
    for item in froms:
        if isinstance(item, sa.Join):
            yield from _core_conditions([item.left], outer=outer)
            yield from _core_conditions([item.right], outer=outer or item.isouter)
        elif is_scoped_table(item):
            column = item.c.tenant_id
            if outer:
                yield lambda current, column=column: sa.or_(column == current, column.is_(None))
            else:
                yield lambda current, column=column: column == current


def _scope_insert(state: ORMExecuteState, statement: sa.Insert) -> bool:
    """Stamp and check the rows of an INSERT into a tenant-scoped table; whether it is one."""
    table = statement.table
    if not is_scoped_table(table):
        return False
    current = required("an INSERT")
    if current is None:
        return True
    rows = inserted_rows(statement, state.parameters)
    check_tenant_rows(current, rows)
    if any("tenant_id" not in row for row in rows):
        state.statement, state.parameters = _stamped(statement, state.parameters, current)
    columns = conflict_columns(statement, typing.cast("sa.Table", table))
    if columns:
        keys = [tuple(r.get(c.key, UNKNOWN) for c in columns) for r in rows]
        keys = [k for k in keys if UNKNOWN not in k]
        target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
        tenant_column = typing.cast("sa.Table", table).c.tenant_id
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            values = [k[0] for k in chunk] if len(columns) == 1 else chunk
            query = sa.select(sa.literal(1)).where(target.in_(values), tenant_column != current)
            connection = state.session.connection()
            if connection.execute(query.limit(1), execution_options=TENANT_CHECKED).first():
                raise TenantMismatchError(
                    f"an upsert into {getattr(table, 'name', table)} meets a row of another tenant"
                )
    return True


def _stamped(statement: sa.Insert, parameters: Any, current: str) -> tuple[sa.Insert, Any]:
    """The INSERT and its parameters with ``tenant_id`` set wherever it is missing."""
    if isinstance(parameters, list):
        return statement, [{"tenant_id": current, **p} for p in parameters]
    if isinstance(parameters, dict) and parameters:
        return statement, {"tenant_id": current, **parameters}
    if statement._multi_values:
        # values([...]) cannot be given another column: the same statement, its rows stamped
        stamped = statement._generate()
        stamped._multi_values = tuple(
            [_with_tenant(typing.cast("dict[Any, Any]", row), current) for row in group]
            for group in statement._multi_values
        )
        return stamped, parameters
    return statement.values(tenant_id=current), parameters


def _with_tenant(row: dict[Any, Any], current: str) -> dict[Any, Any]:
    if any(str(getattr(k, "key", k)) == "tenant_id" for k in row):
        return row
    key = next((k for k in row if not isinstance(k, str)), None)
    column = key.table.c.tenant_id if key is not None else "tenant_id"
    return {**row, column: current}


def _scope_change(state: ORMExecuteState, statement: sa.Update | sa.Delete) -> bool:
    """Confine an UPDATE or DELETE of a tenant-scoped table to the current tenant's rows (or
    check the keys of an executemany one); whether it is one."""
    table = statement.table
    if not is_scoped_table(table):
        return False
    current = required("an UPDATE or DELETE")
    if current is None:
        return True
    if isinstance(statement, sa.Update):
        check_tenant_rows(
            current, [{str(getattr(k, "key", k)): v for k, v in (statement._values or {}).items()}]
        )
    if state.is_executemany:
        mapper = state.bind_mapper
        params = typing.cast("list[dict[str, Any]]", state.parameters)
        if mapper is None or statement.whereclause is not None:
            raise TenantError(
                "an executemany UPDATE/DELETE of a tenant-scoped table with its own WHERE cannot "
                "be scoped: update by primary key, or one statement at a time"
            )
        names = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        check_tenant_rows(current, params)
        check_keys(state.session, mapper.class_, [tuple(p[n] for n in names) for p in params])
        return True
    column = typing.cast("sa.Table", table).c.tenant_id
    state.statement = statement.where(column == current)
    return True


# -- flushes -----------------------------------------------------------------------------------
def _before_flush(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    flush_began(flush_context)  # its statements, checked here, pass the guard
    for obj in session.new:
        if is_tenant_scoped(type(obj)):
            current = required("adding")
            if current is None:
                continue
            if obj.tenant_id is None:
                obj.tenant_id = current
            elif str(obj.tenant_id) != current:
                raise TenantMismatchError(
                    f"a new {type(obj).__name__} names tenant {obj.tenant_id!r} inside tenant "
                    f"{current!r}"
                )
    for obj in [*session.dirty, *session.deleted]:
        if not is_tenant_scoped(type(obj)):
            continue
        current = required("changing")
        if current is None:
            continue
        history = sa.orm.attributes.get_history(obj, "tenant_id")
        if history.added or str(obj.tenant_id) != current:
            raise TenantMismatchError(
                f"a {type(obj).__name__} of tenant {obj.tenant_id!r} cannot be changed or moved "
                f"inside tenant {current!r}"
            )


def _owned_here(instance: object) -> bool:
    """Whether ``instance``, found in the identity map by ``get()`` or a lazy many-to-one load,
    may be the answer: it is not tenant-scoped, or it is the current tenant's (raises outside
    any tenant, as a read does)."""
    if not isinstance(instance, TenantScoped):
        return True
    current = required("a read")
    if current is None:  # every_tenant()
        return True
    owner = instance_state(instance).dict.get("tenant_id")  # an expired one is read again
    return owner is not None and str(owner) == current


def install() -> None:
    """Scope every session to the current tenant; idempotent."""
    if event.contains(Session, "do_orm_execute", _on_execute):
        return
    add_before_everywhere(tenant_guard.guard)
    # the sessions dalkit opens check what get() and a many-to-one load find in the identity map
    add_identity_check(_owned_here)
    # it leaves alone the selects of models that reach no tenant-scoped one
    event.listen(Session, "do_orm_execute", select_neutral(_on_execute, unless=_reaches_scoped))
    event.listen(Session, "before_flush", flush_neutral(_before_flush, unless=_scoped_mapper))
