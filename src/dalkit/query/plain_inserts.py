"""Plain inserts: a repository's ``add`` / ``add_many`` of new entities of one plain model sent
as the INSERT the ORM's flush would send, without the unit-of-work machinery around it.

Written by hand, around SQLAlchemy's own steps, because SQLAlchemy has no public "insert these
new objects" call short of a whole flush. The flush of one new object sets up a flush context
and a subtransaction, sorts its one action topologically, looks up its connection once per
state and organises the states before it runs the INSERT. For the one-row insert of
bench/peers that was about 70 us of the 454 us of CPU the flush took (sync, psycopg; this
path 382 us in the same interleaved run). A whole one-row insert request took 11-22% less CPU,
sync and async (two interleaved runs, plain insert on against off). What
the INSERT is, and what is done to the entities after it, stays SQLAlchemy's: its
``_collect_insert_commands`` (which columns, ``None`` and defaults), ``_emit_insert_statements``
(RETURNING, insertmanyvalues, the server-generated and Python-side defaults put back),
``_finalize_insert_update_commands`` (``after_insert``, ``eager_defaults``) and
``Session._register_persistent`` (identity map, ``pending_to_persistent``).

It applies when the flush would do nothing else (else ``Session.flush`` runs):

- every entity is new (transient), of the same plain model: one table, no inheritance or
  polymorphism, no version counter, no ``delete-orphan`` relationship pointing at it, every
  column attribute one column of that table; no relationship attribute of the entity is set
  (a set relationship is a dependency the flush orders) and no ``before_insert`` listener is
  on the class;
- the session had nothing else to flush, and adding the entities cascaded nothing else into
  it; its class keeps ``Session.flush``; it is not flushing already;
- each of its ``before_flush`` / ``after_flush`` / ``after_flush_postexec`` listeners is one
  that does nothing for such a flush ([`flush_neutral`][dalkit.query.plain_inserts.flush_neutral]:
  the audit for models it does not record, tenant scoping for models that are not
  tenant-scoped, soft delete's orphan handling).

A failed INSERT leaves the session as a failed flush leaves it: the transaction rolled back,
the entities expunged, and the session refusing further work until ``rollback()``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm import persistence as _persistence
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.unitofwork import UOWTransaction
from sqlalchemy.util import greenlet_spawn, safe_reraise

from dalkit.query.plain_entities import all_neutral, maps_one_table, watch_plain

__all__ = ["add_and_flush", "flush_neutral"]

persistence: Any = _persistence  # the flush's own steps (untyped in SQLAlchemy)

# listener -> the mappers whose inserts it does act on (None: none)
_NEUTRAL: dict[Callable[..., Any], Callable[[Mapper[Any]], bool] | None] = {}
_INSERTABLE: weakref.WeakKeyDictionary[Mapper[Any], frozenset[str] | None] = (
    weakref.WeakKeyDictionary()
)


@event.listens_for(Mapper, "after_configured")
def _forget_mappers() -> None:
    # mappers configured later can change one known already: a backref adds a relationship,
    # a delete-orphan relationship makes its target's new entities orphans the flush refuses
    _INSERTABLE.clear()


def flush_neutral(
    listener: Callable[..., Any], unless: Callable[[Mapper[Any]], bool] | None = None
) -> Callable[..., Any]:
    """Declare a ``before_flush`` / ``after_flush`` / ``after_flush_postexec`` listener to do
    nothing when a flush only inserts new entities of one model into a session that had nothing
    else to flush, so sessions it listens to keep the plain insert.

    Args:
        listener: The listener function, as given to ``event.listen``.
        unless: Tells, for the model's mapper, whether the listener acts on its inserts after
            all (then that insert is flushed the ORM's way).

    Returns:
        ``listener``, so that this serves as a decorator.
    """
    _NEUTRAL[listener] = unless
    return listener


def add_and_flush(session: Any, entities: Sequence[Any]) -> Any:
    """``session.add_all(entities)`` then ``session.flush()``: the new entities inserted as plain
    inserts when that does what the flush does (see the module docstring).

    Args:
        session: A Session, or an AsyncSession.
        entities: The entities to add.

    Returns:
        None for a Session; an awaitable for an AsyncSession, so the async source and its
        generated sync twin read the same (``await add_and_flush(...)``).
    """
    inner = getattr(session, "sync_session", None)
    if inner is None:
        _add_and_flush(session, entities)
        return None
    # one greenlet for the whole write, as AsyncSession.flush takes one
    return greenlet_spawn(_add_and_flush, inner, entities)


def _add_and_flush(session: Session, entities: Sequence[Any]) -> None:
    mapper = _insertable(session, entities)
    session.add_all(entities)
    # adding cascades along set relationships only, and none is set: checked all the same
    if mapper is None or len(session._new) != len(entities) or session.identity_map._modified:
        try:
            session.flush()
        except Exception:
            # refused before the flush began (a before_flush listener, as tenant scoping's):
            # left pending, they failed every later flush, or were written by one under
            # another tenant. A failed INSERT has expunged them already
            for entity in entities:
                if instance_state(entity).pending:
                    session.expunge(entity)
            raise
    else:
        watch_plain(session)
        _insert(session, mapper, [instance_state(entity) for entity in entities])


def _insertable(session: Session, entities: Sequence[Any]) -> Mapper[Any] | None:
    """The mapper of ``entities`` when their flush may be a plain insert, else None."""
    if not entities or session._flushing or not session._is_clean():
        return None
    cls = type(session)
    if cls.flush is not Session.flush or cls._flush is not Session._flush:
        return None  # a session class of its own may do more in a flush
    if getattr(session, "connection_callable", None) is not None:
        return None  # sharding: a connection per entity
    mapper: Mapper[Any] | None = None
    relationships: frozenset[str] | None = None
    seen: set[int] = set()
    for entity in entities:
        state = instance_state(entity)
        if state.key is not None or state.session_id is not None or id(entity) in seen:
            return None  # not new, already in a session, or twice in the list
        seen.add(id(entity))
        if mapper is None:
            mapper = state.mapper
            relationships = _insertable_mapper(mapper)
            if relationships is None or mapper.dispatch.before_insert:
                return None
        elif state.mapper is not mapper:
            return None
        if relationships and not relationships.isdisjoint(state.dict):
            return None  # a relationship set: the flush orders its dependency
    if mapper is None or not _listeners_allow(session, mapper):
        return None
    return mapper


def _listeners_allow(session: Session, mapper: Mapper[Any]) -> bool:
    dispatch = session.dispatch
    return all(
        all_neutral(listeners, _NEUTRAL, mapper)
        for listeners in (
            dispatch.before_flush,
            dispatch.after_flush,
            dispatch.after_flush_postexec,
        )
    )


def _insertable_mapper(mapper: Mapper[Any]) -> frozenset[str] | None:
    """The keys of ``mapper``'s relationships when its entities may be inserted plainly."""
    try:
        return _INSERTABLE[mapper]
    except KeyError:
        pass
    plain = (
        maps_one_table(mapper)
        and mapper.version_id_col is None
        and mapper.batch
        and not mapper._delete_orphans
    )
    keys = frozenset(mapper.relationships.keys()) if plain else None
    _INSERTABLE[mapper] = keys
    return keys


def _insert(session: Session, mapper: Mapper[Any], states: list[Any]) -> None:
    """What ``Session._flush`` does for new states of one plain mapper and nothing else."""
    transaction = session._autobegin_t()
    session._flushing = True  # as in a flush: a routing session's get_bind() sees a write
    try:
        flush_context = UOWTransaction(session)
        for state in states:
            flush_context.states[state] = (False, False)
        # the flush's connection: SessionTransaction.connection(mapper), as persistence's
        # _connections_for_states asks for it
        connection = transaction.connection(mapper)
        table = mapper.local_table
        to_insert = [(state, state.dict, mapper, connection) for state in states]
        records = list(persistence._collect_insert_commands(table, to_insert))
        persistence._emit_insert_statements(mapper, flush_context, mapper, table, records)
        persistence._finalize_insert_update_commands(
            mapper, flush_context, [(s, s.dict, mapper, connection, False) for s in states]
        )
        session._register_persistent(set(states))
    except BaseException:
        with safe_reraise():
            # what the flush's subtransaction does as it fails: the session's transaction is
            # rolled back, its new entities expunged, and it refuses work until rollback()
            if transaction.is_active:
                transaction._begin().rollback(_capture_exception=True)
    finally:
        session._flushing = False
