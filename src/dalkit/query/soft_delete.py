"""Soft delete: a ``deleted_at`` column; the loader criteria that hide deleted rows from reads;
the one rule for writes that meet a deleted row (refused with SoftDeletedRowError: bulk_update,
upsert); and delete-orphan turned into a soft delete, on every session once a model has the mixin.
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Iterable, Mapping, Sequence
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
from sqlalchemy.orm.attributes import get_history, set_committed_value
from sqlalchemy.orm.util import LoaderCriteriaOption
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from dalkit.errors import DalkitError
from dalkit.query.plain_entities import select_neutral
from dalkit.query.plain_inserts import flush_neutral
from dalkit.query.tenant_guard import TENANT_CHECKED

__all__ = [
    "UNKNOWN",
    "SoftDeleteMixin",
    "SoftDeletedRowError",
    "conflict_columns",
    "hide_deleted",
    "inserted_rows",
    "is_soft_deletable",
    "live_condition",
    "maps_soft_deletable",
    "pending_orphans",
    "refuse_deleted",
    "utcnow",
]


class SoftDeletedRowError(DalkitError):
    """Raised when a write (bulk_update, upsert, delete-orphan that cannot be kept) would touch
    a soft-deleted row: restore it first, or write it with ``include_deleted``."""


class SoftDeleteMixin:
    """Mix into a declarative model to give it ``deleted_at``; its repositories then delete by
    setting it, hide such rows from every read, and offer ``restore()`` and ``include_deleted``.
    Removing one from a ``delete-orphan`` relationship soft-deletes it too.

    Times are naive UTC, which compare the same way on SQLite and PostgreSQL.
    """

    deleted_at: Mapped[dt.datetime | None] = mapped_column(
        sa.DateTime(timezone=False), default=None, nullable=True, index=True
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        install()


def is_soft_deletable(model: type[Any]) -> bool:
    return isinstance(model, type) and issubclass(model, SoftDeleteMixin)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def hide_deleted() -> LoaderCriteriaOption:
    """A statement option hiding soft-deleted rows of every model that has the mixin, also in
    the relationship loads (lazy, selectin, joined) that the statement's objects trigger."""
    # the lambda is cached by SQLAlchemy by its code location: it must stay free of closures
    return with_loader_criteria(
        SoftDeleteMixin,
        lambda cls: cls.deleted_at.is_(None),
        include_aliases=True,
    )


def live_condition(source: Any) -> sa.ColumnElement[bool] | None:
    """``deleted_at IS NULL`` for a soft-deletable model or its table (what QueryBuilder adds to
    hide deleted rows, as the repositories do); None for anything else."""
    if isinstance(source, type):
        if not is_soft_deletable(source):
            return None
        deleted: sa.ColumnElement[Any] = getattr(source, "deleted_at")  # noqa: B009
        return deleted.is_(None)
    if not isinstance(source, sa.Table) or not maps_soft_deletable(source):
        return None
    column: sa.Column[Any] = source.c.deleted_at
    return column.is_(None)


_tables: dict[sa.Table, bool] = {}


def maps_soft_deletable(table: sa.Table) -> bool:
    """Whether a soft-deletable model is mapped to ``table``."""
    plain = table._deannotate()
    known = _tables.get(plain)
    if known is None:
        known = False
        pending: list[type[Any]] = [SoftDeleteMixin]
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            mapper = sa.inspect(cls, raiseerr=False)
            if mapper is not None and mapper.local_table is plain:
                known = True
        _tables[plain] = known
    return known


def refuse_deleted(model_name: str, rows: Iterable[Mapping[Any, Any]], what: str) -> None:
    """The one rule for writes meeting soft-deleted rows: refuse, naming the first one."""
    for row in rows:
        if row.get("deleted_at") is not None:
            raise SoftDeletedRowError(
                f"{what} would change a soft-deleted {model_name} (deleted at "
                f"{row['deleted_at']}): restore it first, or leave it out"
            )


# -- reading INSERT statements (upserts) -------------------------------------------------------
class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


#: an inserted value that is a SQL expression, known only to the database
UNKNOWN: Any = _Unknown()


def _key(key: Any) -> str:
    return key if isinstance(key, str) else str(getattr(key, "key", key))


def _value(value: Any) -> Any:
    if isinstance(value, sa.BindParameter):
        return value.effective_value
    return UNKNOWN if isinstance(value, sa.ClauseElement) else value


def inserted_rows(statement: sa.Insert, parameters: Any) -> list[dict[str, Any]]:
    """The rows an INSERT writes, by key (column or attribute key), from its ``values()`` and the
    execution's parameters; `UNKNOWN` for SQL expressions. Empty for INSERT ... SELECT."""
    if statement.select is not None:
        return []
    base = {_key(k): _value(v) for k, v in (statement._values or {}).items()}
    multi = statement._multi_values
    rows = [dict(base)] if not multi else []
    columns = list(typing.cast("sa.Table", statement.table).c)
    for group in multi:
        for r in group:
            # values([(1, "x"), ...]) gives each row by the table's column order
            items = r.items() if isinstance(r, Mapping) else zip(columns, r, strict=False)
            rows.append({**base, **{_key(k): _value(v) for k, v in items}})
    if isinstance(parameters, Sequence) and not isinstance(parameters, Mapping):
        return [{**rows[0], **dict(p)} for p in parameters] if rows else []
    if isinstance(parameters, Mapping) and parameters:
        return [{**r, **dict(parameters)} for r in rows]
    return rows


def conflict_columns(
    statement: sa.Insert, table: sa.Table, connection: Any = None
) -> list[sa.Column[Any]] | None:
    """The columns of an upsert's ON CONFLICT target, or None for a plain INSERT (or a target
    that names no columns).

    Args:
        statement: The INSERT.
        table: Its table.
        connection: Where to look up a constraint name the metadata does not know (the server's
            name of a primary key or unique constraint, such as ``<table>_pkey``); without one,
            such a name resolves to None.
    """
    clause = getattr(statement, "_post_values_clause", None)
    if clause is None:
        return None
    names = list(getattr(clause, "inferred_target_elements", None) or [])
    constraint = getattr(clause, "constraint_target", None)
    if not names and constraint is not None:
        for item in table.constraints:
            if item.name == constraint and isinstance(item, ColumnCollectionConstraint):
                names = list(item.columns)
        if not names and connection is not None:
            found = _reflected_columns(connection, table, str(constraint))
            names = [c for c in table.c if c.name in found]
    columns = [table.c[_key(n)] for n in names if _key(n) in table.c]
    return columns or None


def _reflected_columns(connection: Any, table: sa.Table, name: str) -> list[str]:
    """The column names of the database's primary key or unique constraint called ``name`` on
    ``table`` (PostgreSQL names those the metadata leaves unnamed: ``<table>_pkey``,
    ``<table>_<column>_key``); empty when it has none of that name."""
    inspector = sa.inspect(connection)
    primary = inspector.get_pk_constraint(table.name, schema=table.schema)
    if primary.get("name") == name:
        return list(primary.get("constrained_columns") or [])
    for unique in inspector.get_unique_constraints(table.name, schema=table.schema):
        if unique.get("name") == name:
            return list(unique.get("column_names") or [])
    return []


# -- delete-orphan ------------------------------------------------------------------------------
def pending_orphans(session: Session) -> list[tuple[Any, list[tuple[Any, str]]]]:
    """Persistent objects the next flush will delete as orphans of a ``delete-orphan``
    relationship (they are not in ``session.deleted``), each with the (parent, attribute) pairs
    it was removed from."""
    found: dict[int, tuple[Any, list[tuple[Any, str]]]] = {}
    # only objects on either side of a delete-orphan relationship can make or be orphans: the
    # rest skip a history read per relationship and an orphan test (48k fewer instructions of
    # 2.6M, ~10 us, for an audited update on SQLite under callgrind; the audit and soft-delete
    # flush listeners both call this)
    dirty = [obj for obj in session.dirty if _in_delete_orphan(sa.inspect(obj).mapper)]
    if not dirty:
        return []
    for parent in dirty:
        state = sa.inspect(parent)
        for relationship in state.mapper.relationships:
            if not relationship.cascade.delete_orphan:
                continue
            history = get_history(
                parent, relationship.key, sa.orm.PassiveFlag.PASSIVE_NO_INITIALIZE
            )
            for child in history.deleted or ():
                if child is not None and _is_orphan(session, child):
                    found.setdefault(id(child), (child, []))[1].append((parent, relationship.key))
    for obj in dirty:
        if id(obj) not in found and _is_orphan(session, obj):
            found[id(obj)] = (obj, [])
    return list(found.values())


def _in_delete_orphan(mapper: Any) -> bool:
    """Whether objects of ``mapper`` are parents or children in a delete-orphan relationship
    (the children's side is what ``Mapper._is_orphan`` looks at: none there, never an orphan)."""
    return any(m._delete_orphans for m in mapper.iterate_to_root()) or any(
        relationship.cascade.delete_orphan for relationship in mapper.relationships
    )


def _is_orphan(session: Session, obj: Any) -> bool:
    state = sa.inspect(obj)
    if state.key is None or obj in session.deleted or state.deleted:
        return False
    # the same test the flush makes before deleting it
    return bool(state.mapper._is_orphan(state))


_RESCUED = "dalkit.soft_delete.rescued"


def _soft_delete_orphans(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    """Keep soft-deletable orphans: back in place (so the flush leaves the row and its keys) and
    marked deleted; after the flush they leave the parents' loaded collections again."""
    rescued: list[tuple[Any, Any, str]] = []
    for child, parents in pending_orphans(session):
        if not is_soft_deletable(type(child)):
            continue
        for parent, key in parents:
            current = getattr(parent, key)
            if isinstance(current, list):
                current.append(child)
            elif current is None:
                setattr(parent, key, child)
            rescued.append((child, parent, key))
        if not parents:
            _restore_parents(child)
        if _is_orphan(session, child):
            raise SoftDeletedRowError(
                f"{type(child).__name__} is soft-deletable but was orphaned in a way dalkit "
                "cannot undo: delete it through its repository instead"
            )
        child.deleted_at = utcnow()
    if rescued:
        session.info.setdefault(_RESCUED, []).extend(rescued)


def _restore_parents(child: Any) -> None:
    for relationship in sa.inspect(child).mapper.relationships:
        if relationship.direction is not sa.orm.MANYTOONE:
            continue
        history = get_history(child, relationship.key, sa.orm.PassiveFlag.PASSIVE_NO_INITIALIZE)
        if history.deleted and not history.added and history.deleted[0] is not None:
            setattr(child, relationship.key, history.deleted[0])


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    for child, parent, key in session.info.pop(_RESCUED, []):
        current = sa.inspect(parent).dict.get(key)
        if isinstance(current, list):
            set_committed_value(parent, key, [c for c in current if c is not child])
        elif current is child:
            set_committed_value(parent, key, None)


def _check_upsert(state: ORMExecuteState) -> None:
    """An upsert meeting a soft-deleted row would update and return it: refused instead."""
    statement = state.statement
    if not state.is_insert or not isinstance(statement, sa.Insert):
        return
    table = statement.table
    if not isinstance(table, sa.Table) or not maps_soft_deletable(table):
        return
    if getattr(statement, "_post_values_clause", None) is None:
        return  # a plain INSERT
    connection = state.session.connection()
    columns = conflict_columns(statement, table, connection)
    if columns is None:
        return
    keys = [
        tuple(r.get(c.key, UNKNOWN) for c in columns)
        for r in inserted_rows(statement, state.parameters)
    ]
    keys = [k for k in keys if UNKNOWN not in k]
    target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        values = [k[0] for k in chunk] if len(columns) == 1 else chunk
        query = sa.select(table.c.deleted_at).where(
            target.in_(values), table.c.deleted_at.is_not(None)
        )
        found = (
            connection.execute(query.limit(1), execution_options=TENANT_CHECKED).mappings().all()
        )
        refuse_deleted(table.name, found, "upsert")


def install() -> None:
    """Soft-delete orphans in every session; idempotent. Called when the first model gets the
    mixin; runs before the audit's flush listener, which then records the update."""
    if event.contains(Session, "before_flush", _soft_delete_orphans):
        return
    # orphans exist only where a loaded entity changed: never in a flush of new entities alone
    event.listen(Session, "before_flush", flush_neutral(_soft_delete_orphans), insert=True)
    event.listen(Session, "after_flush_postexec", flush_neutral(_after_flush))
    event.listen(Session, "do_orm_execute", select_neutral(_check_upsert))  # inserts only
