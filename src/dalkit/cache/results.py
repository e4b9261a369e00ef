"""Results in and out of the cache: a result frozen for storing, and a cached one served into
a session whose entities then behave like loaded ones (changing one flushes an UPDATE)."""

from __future__ import annotations

import pickle
import weakref
from typing import Any

from sqlalchemy.engine import FrozenResult, Result, Row
from sqlalchemy.orm import Session
from sqlalchemy.orm.loading import merge_frozen_result

from dalkit.cache.rows import (
    MARK,
    EntityRows,
    decode_rows,
    encode_rows,
    entity_rows,
    serve_entities,
    serve_rows,
)
from dalkit.query.plain_entities import propagated_options

__all__ = ["freeze", "pickled", "shaped", "thaw"]

_STATE = "_sa_instance_state"  # what marks a mapped instance (an entity) in a row
# mapper -> the names of its relationships
_RELATIONSHIP_KEYS: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def freeze(result: Result[Any], shared: bool) -> tuple[FrozenResult[Any], Any]:
    """Buffer a result and make what to store of it.

    Args:
        result: The result of the query, not yet read.
        shared: Whether the backend is shared between processes (Redis).

    Returns:
        The buffered result, and what to store. Plain entities of one class are kept as
        their column values ([`EntityRows`][dalkit.cache.rows.EntityRows], encoded for a
        shared backend). Any other result is pickled for a shared backend; for process
        memory an unpickled copy is kept, detached from the session that loaded it (whose
        later changes must never reach the cache) and served without unpickling. None to
        store when the result cannot be pickled (its entities carry a loader option made of a
        lambda, `with_loader_criteria`): the read is served, not cached.
    """
    frozen = result.freeze()
    rows = entity_rows(frozen, prepared=not shared)
    if rows is not None:
        encoded = encode_rows(rows) if shared else rows
        if encoded is not None:
            return frozen, encoded
    payload = pickled(frozen)
    return frozen, payload if shared or payload is None else pickle.loads(payload)


def pickled(value: Any) -> bytes | None:
    """``value`` pickled; None when it cannot be (a lambda, a lock, a local class in it)."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None


def thaw(
    session: Session, statement: Any, payload: Any, entities: bool = False
) -> Result[Any] | list[Any] | None:
    """Serve a cached result as a live one.

    Its entities become persistent in ``session`` without a query, so they behave like
    entities it loaded: changing one flushes an UPDATE. An entity just unpickled (from a
    shared backend) is attached as it is when the session does not hold it yet and it
    carries no loaded relationship; any other is merged (``merge(load=False)``: a copy,
    so that a shared entry never reaches a session). Which columns hold entities is read
    from the rows themselves: no compile state of the statement is built, as
    ``merge_frozen_result`` does; that pays for one row (a ``get``), while for several rows
    of process memory ``merge_frozen_result``, cheaper per entity, is used.

    Args:
        session: The ORM session the read was made for.
        statement: The statement whose result this is.
        payload: What [`freeze`][dalkit.cache.results.freeze] stored.
        entities: Give the entities ``result.scalars().all()`` would, not the result (for
            entity rows, without building one: 2 of the ~30 us of a memory hit of a
            repository ``get``, timeit).

    Returns:
        A result as ``session.execute(statement)`` would have returned it (its entities with
        ``entities``); None when the entry was written for another version of the model (the
        caller runs the query).
    """
    if isinstance(payload, bytes) and payload[:1] == MARK:
        payload = decode_rows(payload)
        if payload is None:
            return None
    if isinstance(payload, EntityRows):
        serve = serve_entities if entities else serve_rows
        return serve(session, payload, propagated_options(statement))
    result = _thaw_frozen(session, statement, payload)
    return None if result is None else shaped(result, entities)


def shaped(result: Result[Any], entities: bool) -> Result[Any] | list[Any]:
    """``result``; with ``entities``, the entities ``result.scalars().all()`` gives."""
    return list(result.scalars().all()) if entities else result


def _thaw_frozen(session: Session, statement: Any, payload: Any) -> Result[Any] | None:
    """A result stored as a (pickled) ``FrozenResult``, served into ``session``; None when the
    session holds unflushed changes (autoflush off), which merging its entities would
    overwrite: the query runs instead, and keeps them, as SQLAlchemy's own does."""
    orm = statement is not None and statement._propagate_attrs.get("compile_state_plugin") == "orm"
    if orm and session.identity_map._modified:
        return None
    fresh = isinstance(payload, bytes)
    frozen: FrozenResult[Any] = pickle.loads(payload) if fresh else payload
    if not orm:
        return frozen()
    if not fresh and len(frozen.data) > 1:
        merged: FrozenResult[Any] = merge_frozen_result(  # type: ignore[no-untyped-call]
            session, statement, frozen, load=False
        )
        return merged()
    identity_map = session.identity_map
    rows: list[Any] = []
    for raw in frozen.data:
        row = list(raw) if isinstance(raw, Row) else [raw]
        for i, value in enumerate(row):
            state = getattr(value, _STATE, None)
            if state is None:
                continue
            held = identity_map.get(state.key) if state.key is not None else None
            if held is value:
                continue  # the same entity earlier in this result
            if fresh and held is None and state.key is not None and _plain(state):
                session.add(value)
            else:
                row[i] = session.merge(value, load=False)
        rows.append(row)
    return frozen.with_new_rows(rows)()


def _plain(state: Any) -> bool:
    """Whether an entity carries no loaded relationship (adding it cascades to nothing)."""
    keys = _RELATIONSHIP_KEYS.get(state.mapper)
    if keys is None:
        keys = _RELATIONSHIP_KEYS[state.mapper] = frozenset(state.mapper.relationships.keys())
    return keys.isdisjoint(state.dict)
