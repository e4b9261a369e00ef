"""Capture of every change to an audited model into ``dalkit_audit_log``, in the same
transaction.

Written once on SQLAlchemy's synchronous session events, which serve the async API too:
``before_flush``/``after_flush`` for the ORM unit of work, ``do_orm_execute`` for ORM-enabled
UPDATE and DELETE statements, whose old values are read in the same transaction before they run.
The listeners sit on the ``Session`` class, so every session (dalkit's, a plain SQLAlchemy one,
the sync session inside an AsyncSession) is covered; they are installed when the first model is
audited. The repositories' ``bulk_update`` writes through the driver, out of the events' sight,
and records its chunks through :func:`recording_bulk_update` instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import typing
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlalchemy.orm.attributes import get_history

from dalkit._codec import jsonable
from dalkit.audit.registry import (
    REDACTED,
    ModelAudit,
    current_actor,
    entity_key,
    model_audit,
    on_first_audited,
)
from dalkit.tables import audit_log

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "BulkUpdateAudit",
    "bulk_update_audit",
    "install",
    "recording_bulk_update",
    "recording_bulk_update_async",
]

_IN_CHUNK = 500
_PENDING_KEY = "dalkit.audit.pending"


def _shown(config: ModelAudit, key: str, value: Any) -> Any:
    return REDACTED if key in config.redact else jsonable(value)


def _row(
    config: ModelAudit, action: str, key: Sequence[Any], changes: dict[str, Any]
) -> dict[str, Any]:
    actor_id, request_id = current_actor()
    return {
        "entity_type": config.name,
        "entity_id": entity_key(key),
        "action": action,
        "changes": changes,
        "actor_id": actor_id,
        "request_id": request_id,
        "occurred_at": dt.datetime.now(dt.UTC),
    }


def _full(config: ModelAudit, values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _shown(config, k, values[k]) for k in config.keys if k in values}


def _diff(config: ModelAudit, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    changes = {}
    for key in config.keys:
        if key in old and key in new and old[key] != new[key]:
            changes[key] = {
                "old": _shown(config, key, old[key]),
                "new": _shown(config, key, new[key]),
            }
    return changes


def _write(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(audit_log.insert(), rows)


# -- capture: the ORM unit of work -------------------------------------------------------------
def _before_flush(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    """Deletes and updates are recorded from what the database holds before the flush."""
    rows: list[dict[str, Any]] = []
    for obj in session.deleted:
        config = model_audit(type(obj))
        if config is not None:
            # loads attributes the session expired: the row is still there to read
            values = {key: getattr(obj, key) for key in config.keys}
            rows.append(
                _row(config, "delete", sa.inspect(obj).identity or (), _full(config, values))
            )
    for obj in session.dirty:
        config = model_audit(type(obj))
        if config is None or not session.is_modified(obj, include_collections=False):
            continue
        changes = _unit_of_work_changes(session, config, obj)
        if changes:
            rows.append(_row(config, "update", sa.inspect(obj).identity or (), changes))
    flush_context.attributes[_PENDING_KEY] = rows


def _unit_of_work_changes(session: Session, config: ModelAudit, obj: Any) -> dict[str, Any]:
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    unknown: list[str] = []
    for key in config.keys:
        history = get_history(obj, key, passive=sa.orm.PassiveFlag.PASSIVE_NO_INITIALIZE)
        if not history.added:
            continue
        new[key] = history.added[0]
        if history.deleted:
            old[key] = history.deleted[0]
        else:
            unknown.append(key)  # set without having been loaded: the old value is in the row
    if unknown:
        fields = dict(config.fields)
        state = sa.inspect(obj)
        condition = sa.and_(
            *(fields[k] == v for k, v in zip(config.primary_key, state.identity or (), strict=True))
        )
        statement = sa.select(*(fields[k].label(k) for k in unknown)).where(condition)
        found = session.connection().execute(statement).mappings().first()
        if found is not None:
            old.update(found)
    return _diff(config, old, new)


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    rows: list[dict[str, Any]] = flush_context.attributes.pop(_PENDING_KEY, [])
    for obj in session.new:
        config = model_audit(type(obj))
        if config is not None:
            state = sa.inspect(obj)
            values = _inserted_values(config, state.dict)
            # the identity key is assigned after this event; the key attributes are set
            key = state.mapper.primary_key_from_instance(obj)
            rows.append(_row(config, "create", key, _full(config, values)))
    _write(session, rows)


def _inserted_values(config: ModelAudit, loaded: Mapping[str, Any]) -> dict[str, Any]:
    """What an INSERT wrote, without querying in the middle of the flush: the loaded values,
    and NULL for a column left unset that has no server default to fill it."""
    values = {}
    for key, column in config.fields:
        if key in loaded:
            values[key] = loaded[key]
        elif getattr(column, "server_default", None) is None and not column.primary_key:
            values[key] = None
    return values


# -- capture: ORM-enabled UPDATE and DELETE statements ---------------------------------------
def _on_orm_execute(state: ORMExecuteState) -> Any:
    if not (state.is_update or state.is_delete) or state.is_from_statement:
        return None
    mapper = state.bind_mapper
    config = model_audit(mapper.class_) if mapper is not None else None
    if mapper is None or config is None:
        return None
    session = state.session
    if state.is_executemany:
        # ORM bulk UPDATE by primary key: the rows name the keys
        params: list[dict[str, Any]] = state.parameters  # type: ignore[assignment]
        before = _rows_by_key(session, config, [config.key_of(p) for p in params])
    else:
        statement = config.select()
        where = typing.cast("sa.Update | sa.Delete", state.statement).whereclause
        if where is not None:
            statement = statement.where(where)
        else:
            statement = statement.select_from(mapper.local_table)
        found = session.connection().execute(statement, state.parameters or {}).mappings()
        before = {config.key_of(row): dict(row) for row in found}
    result = state.invoke_statement()
    _record_since(session, config, before, deleting=state.is_delete)
    return result


def _record_since(
    session: Session,
    config: ModelAudit,
    before: Mapping[tuple[Any, ...], Mapping[str, Any]],
    *,
    deleting: bool = False,
) -> None:
    """Log what became of the rows that held ``before``: the fields that changed in each row
    still there, or (when ``deleting``) the full values of each row now gone."""
    if not before:
        return
    after = _rows_by_key(session, config, list(before))
    rows = []
    for key, old in before.items():
        new = after.get(key)
        if deleting:
            if new is None:
                rows.append(_row(config, "delete", key, _full(config, old)))
        elif new is not None:
            changes = _diff(config, old, new)
            if changes:
                rows.append(_row(config, "update", key, changes))
    _write(session, rows)


def _rows_by_key(
    session: Session, config: ModelAudit, keys: Sequence[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The recorded fields of the rows with primary keys ``keys``, in bounded IN lists."""
    fields = dict(config.fields)
    pk_columns = [fields[k] for k in config.primary_key]
    target = pk_columns[0] if len(pk_columns) == 1 else sa.tuple_(*pk_columns)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        values = [k[0] for k in chunk] if len(pk_columns) == 1 else chunk
        statement = config.select().where(target.in_(values))
        for row in session.connection().execute(statement).mappings():
            found[config.key_of(row)] = dict(row)
    return found


# -- capture: bulk_update, which writes through the driver -------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class BulkUpdateAudit:
    """Recording a repository's ``bulk_update`` of one audited model, a chunk at a time: the
    chunk's rows are read by primary key before and after it is written, so memory holds one
    chunk's values, and the log rows go into the chunk's savepoint with it."""

    config: ModelAudit

    def read_before(
        self, session: Session, rows: Sequence[Mapping[str, Any]]
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        return _rows_by_key(session, self.config, [self.config.key_of(row) for row in rows])

    def record(self, session: Session, before: Mapping[tuple[Any, ...], Mapping[str, Any]]) -> None:
        _record_since(session, self.config, before)


def bulk_update_audit(model: type[Any]) -> BulkUpdateAudit | None:
    """How to record ``bulk_update`` of ``model``, or None when it is not audited (then the
    bulk update runs no query beyond its own)."""
    config = model_audit(model)
    return None if config is None else BulkUpdateAudit(config)


@contextlib.contextmanager
def recording_bulk_update(
    session: Session, audit: BulkUpdateAudit | None, rows: Sequence[Mapping[str, Any]]
) -> Iterator[None]:
    """Log the changes the block makes to ``rows`` (bulk_update rows, keyed by field name),
    unless it raises; does nothing when ``audit`` is None."""
    if audit is None:
        yield
        return
    before = audit.read_before(session, rows)
    yield
    audit.record(session, before)


@contextlib.asynccontextmanager
async def recording_bulk_update_async(
    session: AsyncSession, audit: BulkUpdateAudit | None, rows: Sequence[Mapping[str, Any]]
) -> AsyncIterator[None]:
    """:func:`recording_bulk_update` for an AsyncSession."""
    if audit is None:
        yield
        return
    before = await session.run_sync(audit.read_before, rows)
    yield
    await session.run_sync(audit.record, before)


# -- installing --------------------------------------------------------------------------------
def install() -> None:
    """Capture audited changes in every session; idempotent. Called when the first model is
    audited: until then no listener runs on any flush or statement."""
    if event.contains(Session, "before_flush", _before_flush):
        return
    event.listen(Session, "before_flush", _before_flush)
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _on_orm_execute)


on_first_audited(install)
