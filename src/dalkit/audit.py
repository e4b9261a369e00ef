"""The audit log: which models are audited (:class:`Audited`, :func:`register`), who acts
(:func:`actor`), and capture of every change into ``dalkit_audit_log`` in the same transaction;
reading the trail back lives in :mod:`dalkit.audit_trail`, re-exported here.

Capture is written once on SQLAlchemy's synchronous session events and serves the async API too:
``before_flush``/``after_flush`` for the ORM unit of work, ``do_orm_execute`` for ORM-enabled
UPDATE and DELETE statements, whose old values are read in the same transaction before they run.
The repositories' ``bulk_update`` writes through the driver, out of the events' sight, and records
its chunks through :func:`recording_bulk_update` instead.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import datetime as dt
import decimal
import enum
import json
import typing
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, UOWTransaction, sessionmaker
from sqlalchemy.orm.attributes import get_history

from dalkit.audit_trail import (
    AuditEntry,
    changes_by,
    changes_by_async,
    changes_by_query,
    history,
    history_async,
    history_query,
)
from dalkit.errors import ConfigurationError
from dalkit.tables import audit_log

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = [
    "AuditEntry",
    "Audited",
    "BulkUpdateAudit",
    "actor",
    "bulk_update_audit",
    "changes_by",
    "changes_by_async",
    "changes_by_query",
    "current_actor",
    "history",
    "history_async",
    "history_query",
    "install",
    "recording_bulk_update",
    "recording_bulk_update_async",
    "register",
]

#: what a redacted value is recorded as: that the field changed shows, its value does not
REDACTED = "[redacted]"

_IN_CHUNK = 500
_PENDING_KEY = "dalkit.audit.pending"
_INSTALLED_KEY = "dalkit_audit_installed"


# -- who acts ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Actor:
    actor_id: str | None
    request_id: str | None


_actor: contextvars.ContextVar[_Actor | None] = contextvars.ContextVar(
    "dalkit_audit_actor", default=None
)


@contextlib.contextmanager
def actor(actor_id: object | None, request_id: object | None = None) -> Iterator[None]:
    """Record changes made inside the block as done by ``actor_id`` (for ``request_id``).

    A context variable: concurrent threads and asyncio tasks each keep their own actor.
    """
    token = _actor.set(_Actor(_text(actor_id), _text(request_id)))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> tuple[str | None, str | None]:
    """``(actor_id, request_id)`` that changes made now are recorded with."""
    who = _actor.get()
    return (None, None) if who is None else (who.actor_id, who.request_id)


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)


# -- which models ------------------------------------------------------------------------------
class Audited:
    """Mix into a declarative model to record its creates, updates and deletes.

    ``audit_exclude`` names fields never recorded (not even that they changed);
    ``audit_redact`` names fields recorded as changed with their values hidden;
    ``audit_name`` is the entity type written to the log (default: the class name).
    """

    audit_exclude: ClassVar[Collection[str]] = frozenset()
    audit_redact: ClassVar[Collection[str]] = frozenset()
    audit_name: ClassVar[str | None] = None


@dataclasses.dataclass(frozen=True)
class _ModelAudit:
    name: str
    fields: tuple[tuple[str, sa.ColumnElement[Any]], ...]  # (attribute key, column)
    primary_key: tuple[str, ...]
    redact: frozenset[str]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.fields)

    def select(self) -> sa.Select[Any]:
        """Every recorded field, labelled by its attribute key."""
        return sa.select(*(column.label(key) for key, column in self.fields))

    def key_of(self, row: Mapping[Any, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.primary_key)


_registered: dict[type[Any], tuple[str | None, frozenset[str], frozenset[str]]] = {}
_configs: dict[type[Any], _ModelAudit | None] = {}


def register(
    model: type[Any],
    *,
    exclude: Collection[str] = (),
    redact: Collection[str] = (),
    name: str | None = None,
) -> None:
    """Audit ``model`` (and its subclasses) without the mixin, with the same options."""
    if isinstance(exclude, str) or isinstance(redact, str):
        raise ConfigurationError("exclude and redact take collections of field names")
    _registered[model] = (name, frozenset(exclude), frozenset(redact))
    _configs.clear()


def _model_audit(cls: type[Any]) -> _ModelAudit | None:
    """The audit settings of ``cls``, or None when it is not audited; cached per class."""
    try:
        return _configs[cls]
    except KeyError:
        pass
    found: _ModelAudit | None = None
    options = next((_registered[k] for k in cls.__mro__ if k in _registered), None)
    if options is None and issubclass(cls, Audited):
        options = (cls.audit_name, frozenset(cls.audit_exclude), frozenset(cls.audit_redact))
    if options is not None:
        found = _build(cls, *options)
    _configs[cls] = found
    return found


def entity_type_name(entity_type: type[Any] | str) -> str:
    """The ``entity_type`` the log records for an audited model (a name passes through)."""
    if isinstance(entity_type, str):
        return entity_type
    config = _model_audit(entity_type)
    if config is None:
        raise ConfigurationError(f"{entity_type.__name__} is not audited")
    return config.name


def _build(
    cls: type[Any], name: str | None, exclude: frozenset[str], redact: frozenset[str]
) -> _ModelAudit:
    mapper: Mapper[Any] = sa.inspect(cls)
    keys = [prop.key for prop in mapper.column_attrs]
    unknown = sorted((exclude | redact) - set(keys))
    if unknown:
        raise ConfigurationError(
            f"{cls.__name__} audit options name unknown field(s) {', '.join(unknown)}"
        )
    primary = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    fields = tuple(
        (prop.key, prop.columns[0])
        for prop in mapper.column_attrs
        if prop.key not in exclude or prop.key in primary
    )
    return _ModelAudit(name or cls.__name__, fields, primary, redact)


# -- what is written ---------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` as something ``json.dumps`` accepts, losing nothing a reader needs."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def entity_key(values: Sequence[Any]) -> str:
    """The ``entity_id`` of a primary key: the value as text, or a JSON list when composite."""
    if len(values) == 1:
        return str(jsonable(values[0]))
    return json.dumps([jsonable(v) for v in values])


def _shown(config: _ModelAudit, key: str, value: Any) -> Any:
    return REDACTED if key in config.redact else jsonable(value)


def _row(
    config: _ModelAudit, action: str, key: Sequence[Any], changes: dict[str, Any]
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


def _full(config: _ModelAudit, values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _shown(config, k, values[k]) for k in config.keys if k in values}


def _diff(config: _ModelAudit, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
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
        config = _model_audit(type(obj))
        if config is not None:
            # loads attributes the session expired: the row is still there to read
            values = {key: getattr(obj, key) for key in config.keys}
            rows.append(
                _row(config, "delete", sa.inspect(obj).identity or (), _full(config, values))
            )
    for obj in session.dirty:
        config = _model_audit(type(obj))
        if config is None or not session.is_modified(obj, include_collections=False):
            continue
        changes = _unit_of_work_changes(session, config, obj)
        if changes:
            rows.append(_row(config, "update", sa.inspect(obj).identity or (), changes))
    flush_context.attributes[_PENDING_KEY] = rows


def _unit_of_work_changes(session: Session, config: _ModelAudit, obj: Any) -> dict[str, Any]:
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
        config = _model_audit(type(obj))
        if config is not None:
            state = sa.inspect(obj)
            values = _inserted_values(config, state.dict)
            # the identity key is assigned after this event; the key attributes are set
            key = state.mapper.primary_key_from_instance(obj)
            rows.append(_row(config, "create", key, _full(config, values)))
    _write(session, rows)


def _inserted_values(config: _ModelAudit, loaded: Mapping[str, Any]) -> dict[str, Any]:
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
    config = _model_audit(mapper.class_) if mapper is not None else None
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
    config: _ModelAudit,
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
    session: Session, config: _ModelAudit, keys: Sequence[tuple[Any, ...]]
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

    config: _ModelAudit

    def read_before(
        self, session: Session, rows: Sequence[Mapping[str, Any]]
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        return _rows_by_key(session, self.config, [self.config.key_of(row) for row in rows])

    def record(self, session: Session, before: Mapping[tuple[Any, ...], Mapping[str, Any]]) -> None:
        _record_since(session, self.config, before)


def bulk_update_audit(model: type[Any]) -> BulkUpdateAudit | None:
    """How to record ``bulk_update`` of ``model``, or None when it is not audited (then the
    bulk update runs no query beyond its own)."""
    config = _model_audit(model)
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
def install(session_factory: sessionmaker[Any] | async_sessionmaker[Any]) -> None:
    """Capture audited changes in every session ``session_factory`` makes; idempotent.

    An async_sessionmaker gets its own sync session class, on which the (synchronous)
    listeners sit: SQLAlchemy runs them inside the AsyncSession's calls.
    """
    from sqlalchemy.ext.asyncio import async_sessionmaker

    target: Any = session_factory
    if isinstance(session_factory, async_sessionmaker):
        base = session_factory.kw.get("sync_session_class") or Session
        if getattr(base, _INSTALLED_KEY, False):
            return
        target = type(f"Audited{base.__name__}", (base,), {_INSTALLED_KEY: True})
        session_factory.configure(sync_session_class=target)
    elif event.contains(session_factory, "before_flush", _before_flush):
        return
    event.listen(target, "before_flush", _before_flush)
    event.listen(target, "after_flush", _after_flush)
    event.listen(target, "do_orm_execute", _on_orm_execute)
