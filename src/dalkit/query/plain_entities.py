"""Plain entity reads: a select of one plain model's entities run as a Core statement on the
session's connection, its rows made persistent entities of the session the way the ORM's
loading makes them. The repositories read this way whenever it gives the same entities.

Written by hand because SQLAlchemy has no public "rows to entities" step without its ORM
execution around it (the execute state, the loading context and its row processors). For the
repository ``get`` by id of bench/peers, that machinery was about 60 us of the 300 us of CPU a
request took (async, 32 tasks over a pool of 8: 3,348 -> 4,213 requests/s in one interleaved
run, /work/prof/fastget.py).

It applies when nothing the ORM's way would do is left out (else ``Session.execute`` runs):

- the model is plain: mapped to one table, without inheritance; every column attribute is one
  of that table's columns, loaded with the row (nothing deferred); no relationship is loaded
  eagerly by its mapping; no ``load`` or ``refresh`` listener is on the class;
- the statement selects that model alone, with no execution option and no option but loader
  criteria (soft delete's: they reach the entities' later lazy loads through
  ``state.load_options``, where the ORM puts them too);
- the session's class keeps ``Session.execute``, the session has nothing to flush (an
  autoflush could not happen), and each of its ``do_orm_execute`` listeners is one that leaves
  such a select alone ([`select_neutral`][dalkit.query.plain_entities.select_neutral]: the
  audit, the soft-delete upsert check, N+1 detection, and tenant scoping for models that
  reach no tenant-scoped one). A replica router changes every select: its sessions read the
  ORM's way.

An entity the session holds already is returned as the ORM returns it: its loaded values kept,
its expired or unloaded column attributes filled in from the row.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.loading import _new_runid as new_runid
from sqlalchemy.orm.util import LoaderCriteriaOption

from dalkit.query.lean_read import COUNTED_PER_TRANSACTION, read_rows, rows_of
from dalkit.transaction.deferred import DEFERRED_BEGIN_OPTION

__all__ = [
    "COUNTED_PER_TRANSACTION",
    "PLAIN_WATCH",
    "all_neutral",
    "begin_neutral",
    "load_plain",
    "maps_one_table",
    "persistent_entities",
    "propagated_options",
    "select_neutral",
    "watch_plain",
]

#: In a session's ``info``: a function called with the session just before each plain read or
#: plain insert, which run no ORM event. A listener that follows every operation of some
#: sessions (the web integration's, which refuses a request's session once its transaction
#: ends) sets it on them, and declares itself neutral.
PLAIN_WATCH = "dalkit.plain_watch"

# relationship loaders that set nothing on an entity as it is loaded
_LAZY = frozenset({"select", True, "raise", "raise_on_sql", "write_only", "dynamic"})
# listener -> the mappers whose selects it does change (None: none)
_NEUTRAL: dict[Callable[..., Any], Callable[[Mapper[Any]], bool] | None] = {}


def select_neutral(
    listener: Callable[..., Any], unless: Callable[[Mapper[Any]], bool] | None = None
) -> Callable[..., Any]:
    """Declare a ``do_orm_execute`` listener to leave plain entity selects alone (it returns at
    once for them), so sessions it listens to keep the plain read.

    Args:
        listener: The listener function, as given to ``event.listen``.
        unless: Tells, for the mapper a select is of, whether the listener changes it after
            all (then that read goes the ORM's way).

    Returns:
        ``listener``, so that this serves as a decorator.
    """
    _NEUTRAL[listener] = unless
    return listener


#: ``after_begin`` listeners that need not run for a read made before anything began
_BEGIN_NEUTRAL: set[Callable[..., Any]] = set()


def begin_neutral(listener: Callable[..., Any]) -> Callable[..., Any]:
    """Declare a session ``after_begin`` listener to have nothing to do for a plain read made
    before the session's transaction began, so that such a read may still run on a pooled
    connection of its own (see `load_plain`): any other ``after_begin`` listener is taken to
    prepare the transaction's connection for its reads (``SET LOCAL`` and the like).

    Args:
        listener: The listener function, as given to ``event.listen``.

    Returns:
        ``listener``, so that this serves as a decorator.
    """
    _BEGIN_NEUTRAL.add(listener)
    return listener


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to make entities of one statement's rows."""

    mapper: Mapper[Any]
    keys: tuple[str, ...]  # the column attributes, in the order of ``columns``
    columns: tuple[Any, ...]
    pk: tuple[int, ...]  # the indexes in ``keys`` of the primary key
    load_options: tuple[Any, ...]  # what the ORM would put in state.load_options


_MAPPERS: weakref.WeakKeyDictionary[Mapper[Any], bool] = weakref.WeakKeyDictionary()
_PLANS: weakref.WeakKeyDictionary[sa.Select[Any], _Plan | None] = weakref.WeakKeyDictionary()


@event.listens_for(Mapper, "after_configured")
def _forget_mappers() -> None:
    # mappers configured later can change one known already: a backref adds a relationship
    # to the mapper it points at (never on a request's path: it runs as mappers configure)
    _MAPPERS.clear()
    _PLANS.clear()


def load_plain(
    session: Session, statement: Any, params: Mapping[str, Any] | None
) -> list[Any] | None:
    """The entities ``session.execute(statement, params).scalars().all()`` would return, read
    without the ORM's execution, or None when that would not give the same (nothing was sent).

    Args:
        session: The (sync) session to read in.
        statement: The select.
        params: Its bound parameters.

    Returns:
        The entities, in row order; None: run ``session.execute`` instead.
    """
    plan = _plan_of(statement)
    if plan is None or not _session_allows(session, plan.mapper):
        return None
    watch_plain(session)
    if session._transaction is None and _BEGIN_NEUTRAL.issuperset(session.dispatch.after_begin):
        bind = session.get_bind(mapper=plan.mapper, clause=statement)
        # an engine's: a session bound to a connection reads in that connection's transaction
        options = bind.get_execution_options()
        if (
            isinstance(bind, Engine)
            and DEFERRED_BEGIN_OPTION in options
            and not options.get(COUNTED_PER_TRANSACTION)
        ):
            # nothing begun yet at READ COMMITTED, where this read runs in autocommit anyway:
            # on a connection of its own, given back at once, so the pooled connection is held
            # for the statement only. The session's transaction, its snapshot and its close
            # took 11.5% of the CPU of bench/peers' async get by id, 32 tasks over a pool of 8
            # (8.5% one request at a time): this path on / off, interleaved batches in one
            # process, median ratio of 16 (/work/prof22/perf32/exp_apart.py)
            # (leanly on asyncpg, dalkit.query.lean_read)
            return _entities_of(session, plan, read_rows(bind, statement, params, plan.columns))
    connection = session.connection(bind_arguments={"mapper": plan.mapper, "clause": statement})
    result = connection.execute(statement, params)
    return _entities_of(session, plan, rows_of(result, plan.columns))


def _entities_of(session: Session, plan: _Plan, rows: list[tuple[Any, ...]]) -> list[Any]:
    return persistent_entities(
        session,
        plan.mapper,
        plan.keys,
        plan.pk,
        rows,
        held=_fill_unloaded,
        load_options=plan.load_options,
    )


def persistent_entities(
    session: Session,
    mapper: Mapper[Any],
    keys: tuple[str, ...],
    pk: tuple[int, ...],
    rows: Iterable[tuple[Any, ...]],
    *,
    held: Callable[[Any, tuple[str, ...], tuple[Any, ...]], None],
    load_options: tuple[Any, ...] = (),
    prepared: Sequence[tuple[Any, dict[str, Any]]] | None = None,
) -> list[Any]:
    """Entities of ``mapper`` made persistent in ``session`` from their column values, as
    the ORM's loading makes them (identity map, ``load_options``, the ``load`` and
    ``loaded_as_persistent`` events), without a query context: what the plain read and the
    query cache's hits share.

    Args:
        session: The (sync) session the entities join.
        mapper: Their mapper, a plain one (see the module docstring).
        keys: The column attributes' keys, in the order of each row's values.
        pk: The indexes in ``keys`` of the primary key.
        rows: One tuple of column values per entity.
        held: Called with the state, ``keys`` and the row when the session already holds
            that entity, which is returned as it then is.
        load_options: The statement's options that reach later lazy loads.
        prepared: Each row's identity key and its values by key, built ahead (the query
            cache keeps them with an entry of immutable values: building them on each hit
            was a third of the entities' cost, 20 entities 52 -> 34 us of CPU,
            /work/prof25/cache5/entity_ab.py), or None to build them from ``rows``.

    Returns:
        The entities, in row order.
    """
    manager = mapper.class_manager
    cls: Any = manager.class_
    new_state, set_state = manager._state_constructor, manager._state_setter
    load = manager.dispatch.load if manager.dispatch.load else None
    identity_class = mapper._identity_class
    identity_map = session.identity_map
    held_by, add = identity_map.get, identity_map._add_unpresent
    session_id = session.hash_key
    persistent = session.dispatch.loaded_as_persistent
    loaded_as_persistent = persistent if persistent else None
    load_path = mapper._path_registry
    # a load's number, shared by the entities of one result, as the ORM numbers its loads:
    # N+1 detection groups lazy loads by it (dalkit.observe.nplusone)
    runid = new_runid()
    single = pk[0] if len(pk) == 1 else None
    entities: list[Any] = []
    for index, values in enumerate(rows):
        if prepared is None:
            ident = (values[single],) if single is not None else tuple([values[i] for i in pk])
            identity, columns = (identity_class, ident, None), None
        else:
            identity, columns = prepared[index]
        found = held_by(identity)
        if found is not None:
            held(instance_state(found), keys, values)
            entities.append(found)
            continue
        entity = cls.__new__(cls)
        state = new_state(entity, manager)
        set_state(entity, state)
        state.key = identity
        state.runid = runid
        state.identity_token = None
        state.session_id = session_id
        state.load_options = load_options
        state.load_path = load_path
        add(state, identity)
        entity.__dict__.update(zip(keys, values, strict=True) if columns is None else columns)
        if load is not None:
            load(state, None)
        if loaded_as_persistent is not None:
            loaded_as_persistent(session, state)
        entities.append(entity)
    return entities


def propagated_options(statement: Any) -> tuple[Any, ...]:
    """The options of ``statement`` that the ORM keeps on the entities it loads
    (``state.load_options``), for their later lazy loads: soft delete's loader criteria."""
    options = getattr(statement, "_with_options", ())
    if not options:  # most statements: ~0.3 us a cache hit spent building an empty tuple
        return ()
    return tuple(option for option in options if getattr(option, "propagate_to_loaders", 0))


def _fill_unloaded(state: Any, keys: tuple[str, ...], values: tuple[Any, ...]) -> None:
    """What the ORM does to an entity it holds when a row of it is loaded: values it has are
    kept (a query never overwrites them), expired or unloaded ones come from the row."""
    unloaded = state.unloaded
    if not unloaded:
        return
    loaded = state.dict
    for key, value in zip(keys, values, strict=True):
        if key in unloaded:
            loaded[key] = value
    state._commit(loaded, unloaded)


def watch_plain(session: Session) -> None:
    """Tell the session's `PLAIN_WATCH` function, if it has one, of a plain operation about
    to run (in the greenlet that runs it).

    Args:
        session: The (sync) session.
    """
    watch = session.info.get(PLAIN_WATCH)
    if watch is not None:
        watch(session)


def _session_allows(session: Session, mapper: Mapper[Any]) -> bool:
    if type(session).execute is not Session.execute:
        return False  # a session class of its own may do more in execute()
    if not session._is_clean():
        return False  # an autoflush may be due: leave it to the ORM
    manager = mapper.class_manager.dispatch
    if manager.load or manager.refresh:
        return False  # their listeners are given the ORM's query context
    return all_neutral(session.dispatch.do_orm_execute, _NEUTRAL, mapper)


def all_neutral(
    listeners: Iterable[Callable[..., Any]],
    neutral: Mapping[Callable[..., Any], Callable[[Mapper[Any]], bool] | None],
    mapper: Mapper[Any],
) -> bool:
    """Whether each of ``listeners`` is declared in ``neutral`` and leaves ``mapper`` alone
    (the registries of `select_neutral` and of ``plain_inserts.flush_neutral``)."""
    for listener in listeners:
        if listener not in neutral:
            return False
        unless = neutral[listener]
        if unless is not None and unless(mapper):
            return False
    return True


def _plan_of(statement: Any) -> _Plan | None:
    try:
        return _PLANS[statement]
    except KeyError:
        pass
    except TypeError:  # not weakly referable, so not a Select
        return None
    plan = _make_plan(statement) if isinstance(statement, sa.Select) else None
    _PLANS[statement] = plan
    return plan


def _make_plan(statement: sa.Select[Any]) -> _Plan | None:
    if statement._execution_options:
        return None
    if not all(isinstance(option, LoaderCriteriaOption) for option in statement._with_options):
        return None
    described = statement.column_descriptions
    if len(described) != 1:
        return None
    entity = described[0].get("entity")
    if entity is None or described[0].get("expr") is not entity or described[0].get("aliased"):
        return None
    mapper: Mapper[Any] = sa.inspect(entity)
    if not _is_plain(mapper):
        return None
    props = list(mapper.column_attrs)
    keys = tuple(prop.key for prop in props)
    columns = tuple(prop.columns[0] for prop in props)
    pk = tuple(columns.index(column) for column in mapper.primary_key)
    return _Plan(mapper, keys, columns, pk, propagated_options(statement))


def _is_plain(mapper: Mapper[Any]) -> bool:
    known = _MAPPERS.get(mapper)
    if known is None:
        known = _MAPPERS[mapper] = _check_plain(mapper)
    return known


def maps_one_table(mapper: Mapper[Any]) -> bool:
    """Whether ``mapper`` maps one table and nothing else: no inheritance or polymorphism, and
    each column attribute is one column of that table (what plain reads and plain inserts
    both need of a model)."""
    table = mapper.local_table
    return (
        isinstance(table, sa.Table)
        and mapper.persist_selectable is table
        and mapper.inherits is None
        and mapper.polymorphic_on is None
        and not mapper.polymorphic_map
        and len(list(mapper.self_and_descendants)) == 1
        and all(
            len(prop.columns) == 1
            and isinstance(prop.columns[0], sa.Column)
            and prop.columns[0].table is table
            for prop in mapper.column_attrs
        )
    )


def _check_plain(mapper: Mapper[Any]) -> bool:
    if not maps_one_table(mapper) or mapper.with_polymorphic or mapper.always_refresh:
        return False
    for prop in mapper.column_attrs:
        if prop.deferred or prop.strategy_key != (("deferred", False), ("instrument", True)):
            return False
    mapped = {prop.columns[0] for prop in mapper.column_attrs}
    if any(column not in mapped for column in mapper.primary_key):
        return False
    return all(rel.lazy in _LAZY for rel in mapper.relationships)
