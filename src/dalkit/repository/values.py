"""The values that add() and bulk_insert() write, checked and coerced as update() and upsert()
check them, on every backend alike. No I/O.

The drivers disagreed, and the in-memory repository stored anything: an INTEGER given 1.5 stored
1.5 on SQLite, 2 through psycopg and 1 through asyncpg; a DateTime given an ISO string was parsed
by the server through psycopg and refused by SQLite and asyncpg; an Enum given an unknown name
raised a raw LookupError on SQLite. A value of its column's own Python type is written as it is
(one C-speed pass over a bulk load's column finds that so), but for a number of a NUMERIC
column not already at its scale (rounded as PostgreSQL rounds it, 1.005 to 1.01, or refused
past its precision) and an integer past the smallest integer's range (checked against its
column's: add() stored 2**31 in an INTEGER on SQLite and in memory); any other goes through
the coercion of `dalkit.query.inputs.write_value`: coerced (``"5"`` to 5, ``"red"`` to
``Color.red``) or refused with InvalidQueryError (add) or BulkLoadError naming the row
(bulk_insert, bulk_update).
Through psycopg, bulk_insert() runs that pass while the server works through its COPY, and
redoes the load with the rows coerced only when a value is of another type
(`dalkit.repository.streamed`).

`stored_value` is what the in-memory repository keeps of a value, as the databases give it
back: a CHAR(n)'s text padded, a ``real``'s number at 4 bytes, a NUMERIC column's number at the
column's scale, a datetime in the column's kind, and a value JSON cannot hold (a set) or a
``real`` cannot (1e39) refused as the drivers and the server refuse it.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import functools
import json
import math
import operator
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.orm.attributes import instance_state

from dalkit.engine.numbers import numeric_as_stored, numeric_typmod
from dalkit.errors import DatabaseError, InvalidQueryError
from dalkit.query.fields import CoercionError, FieldInfo, ModelInfo
from dalkit.query.inputs import as_held, numeric_float, write_value
from dalkit.repository.copy import row_error

__all__ = ["ColumnValues", "coerce_entity", "coerce_rows", "of_own_types", "stored_value"]

#: the types each kind of column takes as they are (a datetime's zone is the engine's concern)
_OWN_TYPES: dict[str, frozenset[type[Any]]] = {
    "int": frozenset({int}),
    "float": frozenset({float}),
    # ints, floats and Decimals are rounded to the scale and checked against the precision
    # (a Decimal already at its column's scale is found so by one C-speed pass: _decimals_fit)
    "decimal": frozenset(),
    "str": frozenset({str}),
    "bool": frozenset({bool}),
    "datetime": frozenset({dt.datetime}),
    "date": frozenset({dt.date}),
    "time": frozenset({dt.time}),
    "uuid": frozenset({uuid.UUID}),
}
_NONE = frozenset({type(None)})
_STR = frozenset({str})
_NUMBERS = frozenset({int, decimal.Decimal})
_BIG = 32767  # an int past it may be past its column's range (SmallInteger's is the least)


def coerce_entity(info: ModelInfo, entity: Any) -> None:
    """Sets each field of ``entity`` whose value is not of its column's own type to the value
    update() would store, or raises InvalidQueryError naming the field.

    Args:
        info: The entity's model.
        entity: A new instance of the model.
    """
    loaded = instance_state(entity).dict
    for name, field, own in _checked_fields(info):
        value = loaded.get(name)
        # an int past the smallest integer's range is checked against its column's range, a
        # text against its column's length and for NUL (PostgreSQL refuses both, SQLite and the
        # in-memory repository stored them)
        if _kept(field, own, value) and not (type(value) is int and abs(value) > _BIG):
            continue
        coerced = write_value(field, value)
        if coerced is not value:
            setattr(entity, name, coerced)


@functools.cache
def _checked_fields(info: ModelInfo) -> tuple[tuple[str, FieldInfo, frozenset[type[Any]]], ...]:
    # each add() checks every field: its own types are worked out once per model (a ModelInfo
    # is made once per model, and hashes by identity). Each call built a frozenset per field
    # and found the entity's state through sa.inspect(): bench/peers' six-column Item,
    # coerce_entity 6.75 -> 1.93 us a call (medians of 7 alternating runs, /work/prof21/perf/
    # coerce_ab.py, loaded shared machine), of an async add() request's ~730 us of CPU
    return tuple(
        (name, field, own)
        for name, field in info.fields.items()
        if (own := _own_types(field)) is not None
    )


def coerce_rows(info: ModelInfo, rows: Sequence[Any]) -> Sequence[Any]:
    """``rows`` with each value that is not of its column's own type coerced as update() would
    store it (rows copied only where one is), or BulkLoadError naming the first row refused.

    Args:
        info: The rows' model.
        rows: The caller's rows (a row of another shape is left to the load to refuse).

    Returns:
        The rows to load.
    """
    coerced: list[Any] | None = None
    for name, field, own in _columns_to_coerce(info, rows):
        if coerced is None:
            coerced = list(rows)
        for index, row in enumerate(coerced):
            value = row[name]
            if _kept(field, own, value):
                continue
            try:
                coerced[index] = {**row, name: write_value(field, value)}
            except InvalidQueryError as exc:
                raise row_error(index, rows[index], exc) from None
    return rows if coerced is None else coerced


class ColumnValues(dict[str, list[Any]]):
    """The values of each field of ``rows``, listed at the first read of the field and kept, so
    the checks of one stretch of a load (types, zones, integer ranges) read each field of the
    rows once. A field a row lacks raises KeyError, a row that is no mapping TypeError.

    Each check read its fields from the rows itself: 10 passes over bench/peers' rows (six
    columns, three integer and one datetime) where 6 now do; measured at
    `dalkit.repository.streamed.StreamedTuples.check`.
    """

    __slots__ = ("_rows",)

    def __init__(self, rows: Sequence[Any]) -> None:
        super().__init__()
        self._rows = rows

    def __missing__(self, name: str) -> list[Any]:
        values = self[name] = list(map(operator.itemgetter(name), self._rows))
        return values


def of_own_types(info: ModelInfo, rows: Sequence[Any], columns: ColumnValues | None = None) -> bool:
    """Whether every value of ``rows`` is of its column's own type: `coerce_rows()` would
    return them as they are.

    Args:
        info: The rows' model.
        rows: The caller's rows (one of another shape counts as of its own types: the load
            refuses it by name).
        columns: Their values by field, when other checks of the same rows read them too.

    Returns:
        True when there is nothing to coerce.
    """
    return next(_columns_to_coerce(info, rows, columns), None) is None


def _columns_to_coerce(
    info: ModelInfo, rows: Sequence[Any], columns: ColumnValues | None = None
) -> Iterator[tuple[str, FieldInfo, frozenset[type[Any]]]]:
    """The name, field and own types of each column of ``rows`` with a value of another type,
    in row 0's order; none once a row turns out to have another shape."""
    if not rows or not isinstance(rows[0], Mapping):
        return
    for name in rows[0]:
        field = info.fields.get(name)
        if field is None:
            continue
        own = _own_types(field)
        if own is None:
            continue
        column = operator.itemgetter(name)
        try:  # one C-speed pass over the column, no list of it: 35-45 ms per 100k rows of
            # bench/peers' six columns where a list first took 45-61 (/work/prof19/variants.py);
            # a text column's values are listed, as its length and NUL check reads them again
            if columns is not None:
                values: Iterable[Any] = columns[name]
            else:
                values = list(map(column, rows)) if str in own else map(column, rows)
            kinds = set(map(type, values))
        except (KeyError, TypeError):
            return  # refused by name by the load
        if kinds <= own and (str not in kinds or _strings_fit(field, kinds, values)):
            continue
        if kinds <= own | _NUMBERS and _decimals_fit(field, map(column, rows)):
            continue
        yield name, field, own


def _own_types(field: FieldInfo) -> frozenset[type[Any]] | None:
    """The types ``field`` takes as they are (None among them); None: any value (a column of
    a type dalkit does not coerce, such as JSON)."""
    if numeric_float(field):
        return _NONE  # each number is rounded to the scale and checked, as a Decimal is
    own = _OWN_TYPES.get(field.kind)
    if own is not None:
        return own | _NONE
    if field.kind == "enum":
        enum_class = getattr(field.column.type, "enum_class", None)
        return _NONE if enum_class is None else frozenset({enum_class, type(None)})
    if isinstance(field.column.type, sa.LargeBinary):
        return frozenset({bytes, type(None)})
    return _NONE if isinstance(field.column.type, DOMAIN) else None


def _decimals_fit(field: FieldInfo, values: Iterable[Any]) -> bool:
    """Whether every int and Decimal of a NUMERIC column's ``values`` is already as the column
    stores it, at its scale and within its precision (`write_value` would keep it): C-speed
    quantizing, ~25 ms per 100k values where checking each took 0.45 s. False (each is then
    coerced, or refused naming the row) also for a non-finite one."""
    if field.kind != "decimal":
        return False
    precision, scale = numeric_typmod(field.column.type)
    if scale is None:  # exact: a number is stored as it is
        return all(map(_is_finite, filter(_is_decimal, values)))
    traps = [decimal.Inexact, decimal.InvalidOperation]
    exact = decimal.Context(prec=max(precision or 0, 1), traps=traps)
    quantize = functools.partial(
        decimal.Decimal.quantize, exp=decimal.Decimal(1).scaleb(-scale), context=exact
    )
    try:
        collections.deque(map(quantize, map(decimal.Decimal, filter(_is_number, values))), maxlen=0)
    except (decimal.Inexact, decimal.InvalidOperation, TypeError):
        return False
    return True


def _kept(field: FieldInfo, own: frozenset[type[Any]], value: Any) -> bool:
    """Whether ``value`` is written as it is: of its column's own type, and a text that fits."""
    return type(value) in own and (type(value) is not str or _strings_fit(field, _STR, (value,)))


def _strings_fit(
    field: FieldInfo, kinds: set[type[Any]] | frozenset[type[Any]], values: Any
) -> bool:
    """Whether every text of ``values`` (a list, whose types are ``kinds``) fits ``field``'s
    column as PostgreSQL takes it: no longer than its length, no NUL (`write_value` refuses the
    others). C-speed passes: a comprehension here took the coercion of bench/peers' bulk load
    (100k rows, two text columns) from 33 to 62 ms, these to 45 (/work/prof22/coerce_bench.py)."""
    texts = values if kinds == _STR else list(filter(str.__instancecheck__, values))
    length = getattr(field.column.type, "length", None)
    if isinstance(length, int) and max(map(len, texts), default=0) > length:
        return False
    return "\x00" not in "".join(texts)


def _is_decimal(value: Any) -> bool:
    return type(value) is decimal.Decimal


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBERS


def _is_finite(value: decimal.Decimal) -> bool:
    return value.is_finite()


def stored_value(field: FieldInfo, value: Any) -> Any:
    """``value`` as a database gives it back from ``field``'s column, for the in-memory
    repository: a CHAR(n)'s text padded and a ``real``'s number at 4 bytes (`as_held`), a
    NUMERIC column's int or float at the column's scale, a float as PostgreSQL
    casts it (its 15 significant digits, rounded half away from zero: SQLite rounds the binary
    value, 1.005 to 1.00 where PostgreSQL gives 1.01); a datetime made naive or aware as the
    column is (UTC); a value of a JSON column that JSON cannot hold refused.

    Args:
        field: The column's field.
        value: A value `coerce_entity` or update() let through.

    Returns:
        The value to keep.

    Raises:
        DatabaseError: A value JSON cannot hold (a set), as the drivers' serializer refuses it,
            or a number past a ``real``'s range, as PostgreSQL refuses it.
    """
    if value is None:
        return value
    if field.kind in ("str", "float"):
        try:
            value = as_held(field, value)
        except CoercionError as exc:  # as PostgreSQL refuses it ("value out of range")
            raise DatabaseError(str(exc)) from None
    if field.kind == "decimal" and isinstance(value, int | float | decimal.Decimal):
        return numeric_as_stored(value, numeric_typmod(field.column.type)[1])
    if numeric_float(field) and isinstance(value, int | float) and math.isfinite(value):
        return float(numeric_as_stored(value, numeric_typmod(field.column.type)[1]))
    if field.kind == "datetime" and isinstance(value, dt.datetime):
        return field.coerce(value)
    if isinstance(field.column.type, sa.JSON):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise DatabaseError(str(exc)) from None
    return value
