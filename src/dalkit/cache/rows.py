"""Entity results kept as column values: a result of plain entities of one class is stored as
tuples of their columns and rebuilt on a hit as persistent entities of the caller's session,
without unpickling or merging ORM state."""

from __future__ import annotations

import copy
import datetime
import decimal
import pickle
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import FrozenResult, IteratorResult, Result
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state

from dalkit.query.plain_entities import persistent_entities

__all__ = [
    "EntityRows",
    "Shape",
    "decode_rows",
    "encode_rows",
    "entity_rows",
    "serve_entities",
    "serve_rows",
]

# what the stored form of entity rows starts with; a pickle starts with b"\x80"
MARK = b"R"
_IMMUTABLE = frozenset(
    {int, float, str, bytes, bool, type(None), decimal.Decimal, uuid.UUID}
    | {datetime.datetime, datetime.date, datetime.time, datetime.timedelta}
)
_MAX_HEADERS = 2000
# entries read from a shared backend, decoded, by their stored bytes: a hit of the same entry
# again (the usual case) neither unpickles nor prepares its rows (`decode_rows`): a Redis hit
# of bench_cache's list of 20 took ~189 -> ~165 us of CPU (3 alternating runs, load ~5). Only
# small ones, of immutable values, so that this holds a few MiB at most
_MAX_DECODED = 512
_MAX_DECODED_BYTES = 16_384


@dataclass(slots=True)
class Shape:
    """What rebuilding entities of one mapper needs besides their values.

    Attributes:
        mapper: The entities' mapper (their class is exactly its class).
        keys: The column attributes' keys, in the mapper's order: a row's values follow it.
        pk: The indexes in ``keys`` of the primary key's attributes.
        relationships: The mapper's relationship keys: an entity carrying one is not plain.
    """

    mapper: Mapper[Any]
    keys: tuple[str, ...]
    pk: tuple[int, ...]
    relationships: frozenset[str]


@dataclass(slots=True)
class EntityRows:
    """A cached result of plain entities: its (row-less) frozen result and their values.

    Attributes:
        template: The result's metadata, as a FrozenResult without rows.
        shape: The entities' mapper and column order.
        rows: One tuple of column values per row.
        mutable: Whether a value is of a mutable type (copied before a session gets it).
        prepared: Per row, its identity key and its values by attribute key, made once for
            an entry whose values are immutable (`prepare`); None: made on each hit.
    """

    template: FrozenResult[Any]
    shape: Shape
    rows: tuple[tuple[Any, ...], ...]
    mutable: bool
    prepared: tuple[tuple[Any, dict[str, Any]], ...] | None = None


# mapper -> its shape; header bytes -> (template, shape) of entries read from a shared backend
_SHAPES: weakref.WeakKeyDictionary[Mapper[Any], Shape] = weakref.WeakKeyDictionary()
_HEADERS: dict[bytes, tuple[FrozenResult[Any], Shape] | None] = {}
_DECODED: dict[bytes, EntityRows] = {}


def shape_of(mapper: Mapper[Any]) -> Shape:
    """The (remembered) shape of ``mapper``'s entities."""
    shape = _SHAPES.get(mapper)
    if shape is None:
        keys = tuple(prop.key for prop in mapper.column_attrs)
        pk_keys = [mapper.get_property_by_column(column).key for column in mapper.primary_key]
        shape = Shape(
            mapper=mapper,
            keys=keys,
            pk=tuple(keys.index(key) for key in pk_keys),
            relationships=frozenset(mapper.relationships.keys()),
        )
        _SHAPES[mapper] = shape
    return shape


def entity_rows(frozen: FrozenResult[Any], prepared: bool = True) -> EntityRows | None:
    """``frozen`` as column values, when its rows are plain entities of one class.

    Plain: exactly the mapper's class, persistent without an identity token, every column
    loaded and unchanged, no relationship loaded (those results keep the pickled form).

    Args:
        frozen: The buffered result of an ORM query.
        prepared: `prepare` the rows for the hits (not for rows about to be encoded for a
            shared backend, whose hits decode their own).

    Returns:
        The rows, or None when the result is not of that kind (or has no rows).
    """
    if not frozen._source_supports_scalars or not frozen.data:
        return None
    first = frozen.data[0]
    cls = type(first)
    mapper = getattr(first, "__mapper__", None)
    if mapper is None or mapper.class_ is not cls:
        return None
    shape = shape_of(mapper)
    rows: list[tuple[Any, ...]] = []
    mutable = False
    for entity in frozen.data:
        if type(entity) is not cls:
            return None
        state = instance_state(entity)
        values = state.dict
        if state.key is None or state.key[2] is not None or state.modified:
            return None
        if not shape.relationships.isdisjoint(values):
            return None
        try:
            row = tuple(values[key] for key in shape.keys)
        except KeyError:  # a deferred or expired column
            return None
        mutable = mutable or any(type(value) not in _IMMUTABLE for value in row)
        rows.append(row)
    stored = tuple(rows)
    template = frozen.with_new_rows([])
    if mutable:  # a value a session may change in place must never be the cache's own
        return EntityRows(template, shape, copy.deepcopy(stored), mutable)
    return EntityRows(
        template, shape, stored, mutable, prepare(shape, stored) if prepared else None
    )


def prepare(
    shape: Shape, rows: tuple[tuple[Any, ...], ...]
) -> tuple[tuple[Any, dict[str, Any]], ...]:
    """Each row's identity key and its values by attribute key, for `serve_entities` to
    reuse on every hit (the rows' values must be immutable: every session gets them).

    Args:
        shape: The entities' mapper and column order.
        rows: One tuple of column values per row.
    """
    identity_class, keys, pk = shape.mapper._identity_class, shape.keys, shape.pk
    return tuple(
        ((identity_class, tuple([row[i] for i in pk]), None), dict(zip(keys, row, strict=True)))
        for row in rows
    )


def encode_rows(rows: EntityRows) -> bytes | None:
    """The stored form of ``rows`` for a shared backend: a header (the result's metadata, the
    class and the column keys, the same for every entry of a statement shape) and the values.

    Returns:
        The bytes, or None when the class cannot be pickled by reference.
    """
    try:
        header = pickle.dumps(
            (rows.template, rows.shape.mapper.class_, rows.shape.keys), pickle.HIGHEST_PROTOCOL
        )
    except (pickle.PicklingError, AttributeError, TypeError):
        return None
    values = pickle.dumps(rows.rows, pickle.HIGHEST_PROTOCOL)
    return MARK + len(header).to_bytes(4, "big") + header + values


def decode_rows(payload: bytes) -> EntityRows | None:
    """Entity rows from their stored form; each header is unpickled once per process, and a
    small entry of immutable values once per process too (then shared by every hit of it, as
    process memory's entries are, with their rows `prepare`d).

    Returns:
        The rows; None when the entry was written for columns this process's class does
        not have (another version of the model): the caller runs the query instead.
    """
    decoded = _DECODED.get(payload)
    if decoded is not None:
        return decoded
    size = int.from_bytes(payload[1:5], "big")
    header = payload[5 : 5 + size]
    if header in _HEADERS:
        known = _HEADERS[header]
    else:
        known = _read_header(header)
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[header] = known
    if known is None:
        return None
    template, shape = known
    rows = pickle.loads(memoryview(payload)[5 + size :])
    if len(payload) > _MAX_DECODED_BYTES or _any_mutable(rows):
        return EntityRows(template, shape, rows, mutable=False)  # unpickled: the session's own
    decoded = EntityRows(template, shape, rows, mutable=False, prepared=prepare(shape, rows))
    if len(_DECODED) >= _MAX_DECODED:
        _DECODED.clear()
    _DECODED[payload] = decoded
    return decoded


def _any_mutable(rows: tuple[tuple[Any, ...], ...]) -> bool:
    return any(type(value) not in _IMMUTABLE for row in rows for value in row)


def _read_header(header: bytes) -> tuple[FrozenResult[Any], Shape] | None:
    try:
        template, cls, keys = pickle.loads(header)
        shape = shape_of(inspect(cls))
    except Exception:  # a class this process does not have (or no longer maps)
        return None
    return (template, shape) if shape.keys == tuple(keys) else None


def serve_rows(
    session: Session, rows: EntityRows, load_options: tuple[Any, ...] = ()
) -> Result[Any]:
    """The result of ``rows`` in ``session``, as a query would have returned it: the
    entities of [`serve_entities`][dalkit.cache.rows.serve_entities] in the stored result's
    form.

    Args:
        session: The ORM session the read was made for.
        rows: What [`entity_rows`][dalkit.cache.rows.entity_rows] or
            [`decode_rows`][dalkit.cache.rows.decode_rows] made.
        load_options: The statement's options that reach the entities' lazy loads
            ([`propagated_options`][dalkit.query.plain_entities.propagated_options]).

    Returns:
        A result as ``session.execute(statement)`` would have returned it.
    """
    entities = serve_entities(session, rows, load_options)
    template = rows.template
    # what FrozenResult.__call__ does, without building a FrozenResult for the new rows
    result: IteratorResult[Any] = IteratorResult(template.metadata, iter(entities))
    result._attributes = template._attributes
    result._source_supports_scalars = template._source_supports_scalars
    return result


def serve_entities(
    session: Session, rows: EntityRows, load_options: tuple[Any, ...] = ()
) -> list[Any]:
    """The entities of ``rows``, persistent in ``session``: what ``result.scalars().all()``
    gives of [`serve_rows`][dalkit.cache.rows.serve_rows]' result, without building it.

    An entity the session holds is returned with the entry's column values (as
    ``merge(load=False)`` gives them); any other is made persistent in it as a query loads
    one (identity map, ``load`` and ``loaded_as_persistent`` events), so changing it flushes
    an UPDATE.

    Args:
        session: The ORM session the read was made for.
        rows: What [`entity_rows`][dalkit.cache.rows.entity_rows] or
            [`decode_rows`][dalkit.cache.rows.decode_rows] made.
        load_options: The statement's options that reach the entities' lazy loads.

    Returns:
        The entities, in row order.
    """
    shape = rows.shape
    values = copy.deepcopy(rows.rows) if rows.mutable else rows.rows
    return persistent_entities(
        session,
        shape.mapper,
        shape.keys,
        shape.pk,
        values,
        held=_refresh,
        load_options=load_options,
        prepared=rows.prepared,
    )


def _refresh(state: Any, keys: tuple[str, ...], values: tuple[Any, ...]) -> None:
    """Give a held entity the entry's column values, as ``merge(load=False)`` did: the entry
    is current, so they are what a query would read (with ``populate_existing``). Columns
    changed and not flushed (autoflush off) are kept: only the missing ones are filled in."""
    loaded = state.dict
    keep = loaded if state.modified else ()
    fresh = {key: value for key, value in zip(keys, values, strict=True) if key not in keep}
    loaded.update(fresh)
    state._commit(loaded, list(fresh))
