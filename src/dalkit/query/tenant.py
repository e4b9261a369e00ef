"""Tenant scoping: the `TenantScoped` mixin, the `tenant()` context (`.tenant_context`), and
one ``do_orm_execute``/``before_flush`` pair on the ``Session`` class that makes every read,
relationship load, statement and flush of such models see and write the current tenant's rows
only; without a tenant, they raise `TenantRequiredError` instead of returning every tenant's
rows. INSERT, UPDATE and DELETE are scoped by `.tenant_writes`; what a statement reads where
the criteria and conditions cannot reach (a Table in a subquery, SQL text naming a table) is
found by `.tenant_walk`, and the statement left to the guard. What reaches the database around
the session (raw SQL, Core on a connection) is refused by `.tenant_guard`, which the listeners
tell what they scoped. Installed when the first model gets the mixin.
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
from dalkit.engine.statement_hooks import add_before_everywhere, serves_lean
from dalkit.query import tenant_guard
from dalkit.query.plain_entities import select_neutral
from dalkit.query.plain_inserts import flush_neutral
from dalkit.query.running_flush import flush_began
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
from dalkit.query.tenant_guard import CHECKED_OPTION, is_scoped_table, tenant_checked
from dalkit.query.tenant_walk import leaves_bare, scoped_source
from dalkit.query.tenant_writes import check_keys, check_tenant_rows, scope_change, scope_insert

__all__ = [
    "TenantError",
    "TenantMismatchError",
    "TenantRequiredError",
    "TenantScoped",
    "UnscopedStatementError",
    "check_keys",
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


# -- statements --------------------------------------------------------------------------------
def _on_execute(state: ORMExecuteState) -> Any:
    statement = state.statement
    if isinstance(statement, sa.TextClause | TextualSelect | CompoundSelect):
        # text, and a UNION of selects, cannot be given the criteria: left unscoped, the
        # guard refuses them when they name a tenant-scoped table
        return
    if state.is_column_load and _scoped_mapper(state.bind_mapper):
        scoped = _scope_column_load(state)
    elif state.is_select:
        scoped = _scope_select(
            state, statement._propagate_attrs.get("compile_state_plugin") == "orm"
        )
    elif state.is_insert or state.is_update or state.is_delete:
        scoped = _scope_write(state)
        if scoped and state.is_executemany and not state.is_insert and not scoping_off():
            # an UPDATE by primary key (update(Model) with a list of rows): its keys were
            # checked, but SQLAlchemy sends its statements without the checked option
            with tenant_checked():
                return state.invoke_statement(execution_options={CHECKED_OPTION: True})
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
    return mapper is not None and is_tenant_scoped(mapper.class_)


def _scope_column_load(state: ORMExecuteState) -> bool:
    """An object's own row read again (an expired attribute, ``refresh()``), by its identity:
    SQLAlchemy gives such a load no loader criteria, so it gets the current tenant's condition
    here, and an object of another tenant the session holds is found gone (ObjectDeletedError)
    rather than read."""
    model = typing.cast("Any", state.bind_mapper).class_
    current = required("a read")
    if current is not None:
        statement = typing.cast("sa.Select[Any]", state.statement)
        # the criteria still reach the relationships it loads with the row
        state.statement = statement.where(model.tenant_id == current).options(_criteria(current))
    return not leaves_bare(state.statement, orm=True)


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
            return not leaves_bare(state.statement, orm)
        state.statement = statement.options(_criteria(current))
        return not leaves_bare(state.statement, orm)  # the key SQLAlchemy reuses
    conditions = list(_core_conditions(statement.get_final_froms(), outer=False))
    if not conditions:
        return False
    current = required("a read")
    if current is not None:
        # the conditions cover its FROM list; the criteria, the models of its subqueries
        where = statement.where(*(c(current) for c in conditions))
        state.statement = where.options(_criteria(current))
    return not leaves_bare(state.statement, orm)  # the key SQLAlchemy reuses


def _core_conditions(froms: Iterable[Any], *, outer: bool) -> Iterator[Any]:
    """A condition builder for each tenant-scoped table in the FROM list (through joins); the
    optional side of an outer join keeps its unmatched rows (NULL tenant)."""
    for item in froms:
        if isinstance(item, sa.Join):
            yield from _core_conditions([item.left], outer=outer)
            yield from _core_conditions([item.right], outer=outer or item.isouter)
        elif scoped_source(item):  # the table, or an alias of it
            column = item.c.tenant_id
            if outer:
                yield lambda current, column=column: sa.or_(column == current, column.is_(None))
            else:
                yield lambda current, column=column: column == current


def _scope_write(state: ORMExecuteState) -> bool:
    """Scope an INSERT, UPDATE or DELETE of a tenant-scoped table (`.tenant_writes`); whether it
    is one and nothing it reads is left bare. The criteria reach the models of its subqueries
    (an INSERT ... SELECT's too)."""
    statement = typing.cast("sa.Insert | sa.Update | sa.Delete", state.statement)
    if not is_scoped_table(statement.table):
        return False
    current = required("an INSERT" if state.is_insert else "an UPDATE or DELETE")
    if current is None:
        return True
    if isinstance(statement, sa.Insert):
        scope_insert(state, statement, current)
    else:
        scope_change(state, statement, current)
    state.statement = state.statement.options(_criteria(current))
    return not leaves_bare(state.statement, orm=True)


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
    add_before_everywhere(serves_lean(tenant_guard.guard))  # lean-served: query.lean_read
    # the sessions dalkit opens check what get() and a many-to-one load find in the identity map
    add_identity_check(_owned_here)
    # it leaves alone the selects of models that reach no tenant-scoped one
    event.listen(Session, "do_orm_execute", select_neutral(_on_execute, unless=_reaches_scoped))
    event.listen(Session, "before_flush", flush_neutral(_before_flush, unless=_scoped_mapper))
