"""What dalkit needs to know about a mapped class: its fields, their kinds and value coercion.

No I/O. Shared by the SQL and in-memory repositories, bulk loading and the query builder, so a
value means the same thing wherever it is used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, RelationshipProperty, configure_mappers
from sqlalchemy.sql.schema import ColumnDefault

from dalkit.errors import ConfigurationError
from dalkit.query.context_defaults import of_context
from dalkit.secret_names import is_sensitive

__all__ = ["FieldInfo", "ModelInfo", "column_field", "model_info", "to_decimal"]

_INTEGER = re.compile(r"[+-]?[0-9]{1,40}")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# the ranges PostgreSQL enforces; SQLite stores any 64-bit integer, but a value that could not be
# stored on PostgreSQL would mean different things on the two backends
_INT_BITS = ((sa.SmallInteger, 16), (sa.BigInteger, 64), (sa.Integer, 32))
#: kinds whose values have a total order that the databases and Python agree on
ORDERED_KINDS = frozenset({"int", "float", "decimal", "str", "datetime", "date", "time"})


class CoercionError(ValueError):
    """A filter or cursor value that cannot become a value of the field's type."""


@dataclasses.dataclass(frozen=True, eq=False)
class FieldInfo:
    """A mapped column attribute and how to turn outside input into one of its values."""

    name: str
    column: sa.Column[Any]
    kind: str
    nullable: bool
    coerce: Callable[[Any], Any] = dataclasses.field(repr=False)

    @property
    def ordered(self) -> bool:
        return self.kind in ORDERED_KINDS

    @property
    def sensitive(self) -> bool:
        """Whether user input may only reach this field when a repository lists it: marked
        ``info={"sensitive": True}`` on the column, or named like a secret by the rule the logs
        mask values by (`dalkit.secret_names`: a password, secret, token, key, salt or hash;
        ``info={"sensitive": False}`` says it is not)."""
        return is_sensitive(self.column.info, self.name, self.column.name)

    def python_default(self, *, update: bool = False) -> Callable[[], Any] | None:
        """A function producing the column's Python-side INSERT default (``update``: its
        onupdate), if it has one that needs no statement: a value or a plain function (one of
        the statement's context: `context_default()`)."""
        default = self.column.onupdate if update else self.column.default
        if not isinstance(default, ColumnDefault) or default.is_sequence:
            return None
        if of_context(default):
            return None
        if default.is_callable:
            function = default.arg
            return lambda: function(None)
        if default.is_scalar:
            value = default.arg
            return lambda: value
        return None

    def sequence_default(self, dialect: Any) -> sa.Sequence | None:
        """The column's client-side ``Sequence`` default when SQLAlchemy's INSERTs on
        ``dialect`` take its next value for a row that leaves the column out (SQLite has no
        sequences, and PostgreSQL skips an ``optional`` one); None otherwise.

        Args:
            dialect: The SQLAlchemy dialect of the connection.

        Returns:
            The sequence, or None.
        """
        default = self.column.default
        if not isinstance(default, sa.Sequence) or not dialect.supports_sequences:
            return None
        return None if default.optional and dialect.sequences_optional else default

    def unevaluated_default(self, *, update: bool = False) -> str | None:
        """Why a write bypassing SQLAlchemy cannot produce the column's client-side INSERT
        default (``update``: its onupdate) by itself, as `python_default()` does for a value or
        a plain function: "a SQL expression" (SQLAlchemy renders it into each statement) or "a
        function of the statement's context" (called with one, ``lambda ctx: ...``). None when
        there is nothing in the way, or no such default."""
        default = self.column.onupdate if update else self.column.default
        if not isinstance(default, ColumnDefault):
            return None  # none, or a Sequence: the server's, as for the ORM on SQLite
        if default.is_clause_element:
            return "a SQL expression"
        if of_context(default):
            return "a function of the statement's context"
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class ModelInfo:
    """The mapped class, its table, its coercible fields by attribute name and its relationships."""

    model: type[Any]
    mapper: Mapper[Any]
    table: sa.Table
    fields: dict[str, FieldInfo]
    primary_key: tuple[FieldInfo, ...]
    relationships: dict[str, RelationshipProperty[Any]]

    @property
    def name(self) -> str:
        return self.model.__name__

    def field_for_column(self, column: sa.ColumnElement[Any]) -> FieldInfo | None:
        for info in self.fields.values():
            if info.column is column:
                return info
        return None

    def identity(self, entity: Any) -> tuple[Any, ...]:
        return tuple(getattr(entity, f.name) for f in self.primary_key)

    def ident_tuple(self, ident: Any) -> tuple[Any, ...]:
        """A primary key given as a scalar, tuple or mapping, coerced, as a tuple."""
        pk = self.primary_key
        if len(pk) == 1 and not isinstance(ident, dict | tuple | list):
            return (pk[0].coerce(ident),)  # the usual case, once per get: no generator
        if isinstance(ident, dict):
            values = tuple(ident.get(f.name) for f in pk)
        elif isinstance(ident, tuple | list):
            values = tuple(ident)
        else:
            values = (ident,)
        if len(values) != len(pk):
            raise CoercionError(f"{self.name} has a primary key of {len(pk)} column(s)")
        return tuple(f.coerce(v) for f, v in zip(pk, values, strict=True))


_CACHE: dict[type[Any], ModelInfo] = {}


def model_info(model: type[Any]) -> ModelInfo:
    """The (cached) `ModelInfo` of a mapped class."""
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    try:
        mapper = sa.inspect(model)
    except sa.exc.NoInspectionAvailable:
        raise ConfigurationError(f"{model!r} is not a mapped class") from None
    if not isinstance(mapper, Mapper):
        raise ConfigurationError(f"{model!r} is not a mapped class")
    configure_mappers()  # relationships to classes defined later resolve only now
    table = mapper.local_table
    if not isinstance(table, sa.Table):
        raise ConfigurationError(f"{model.__name__} is not mapped to a single table")
    fields: dict[str, FieldInfo] = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if len(prop.columns) != 1 or not isinstance(column, sa.Column):
            continue  # column_property() expressions and joined-inheritance pairs
        fields[prop.key] = column_field(column, prop.key)
    primary_key = tuple(
        field for column in mapper.primary_key if (field := _by_column(fields, column)) is not None
    )
    if len(primary_key) != len(mapper.primary_key):
        raise ConfigurationError(f"{model.__name__}'s primary key is not made of mapped columns")
    info = ModelInfo(model, mapper, table, fields, primary_key, dict(mapper.relationships.items()))
    _CACHE[model] = info
    return info


def column_field(column: sa.Column[Any], name: str | None = None) -> FieldInfo:
    """A `FieldInfo` for a Core column (named by the column unless ``name`` is given)."""
    kind, coerce = _coercer(column)
    return FieldInfo(name or column.name, column, kind, bool(column.nullable), coerce)


def _by_column(fields: dict[str, FieldInfo], column: Any) -> FieldInfo | None:
    return next((f for f in fields.values() if f.column is column), None)


def _coercer(column: sa.Column[Any]) -> tuple[str, Callable[[Any], Any]]:
    type_ = column.type
    if isinstance(type_, sa.Enum):
        return "enum", _enum_coercer(type_)
    if isinstance(type_, sa.Boolean):
        return "bool", to_bool
    for sa_type, bits in _INT_BITS:
        if isinstance(type_, sa_type):
            return "int", _int_coercer(bits)
    if isinstance(type_, sa.Float):
        return "float", _to_float
    if isinstance(type_, sa.Numeric):  # asdecimal=False: a float, its filters held to the scale
        exact = _decimal_coercer(type_.precision, type_.scale)
        return ("decimal", exact) if type_.asdecimal else ("float", lambda v: float(exact(v)))
    if isinstance(type_, sa.String):
        return "str", _to_str
    if isinstance(type_, sa.DateTime):
        return "datetime", _datetime_coercer(bool(type_.timezone))
    if isinstance(type_, sa.Date):
        return "date", _to_date
    if isinstance(type_, sa.Time):
        return "time", _to_time
    if isinstance(type_, sa.Uuid):
        return "uuid", _to_uuid
    return "other", _unsupported(type_)


def _unsupported(type_: Any) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        raise CoercionError(f"columns of type {type_} cannot be filtered or sorted on")

    return coerce


def _int_coercer(bits: int) -> Callable[[Any], int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def coerce(value: Any) -> int:
        if isinstance(value, bool):
            raise CoercionError("expected an integer, got a boolean")
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            value = int(value)
        if not isinstance(value, int):
            raise CoercionError(f"expected an integer, got {_describe(value)}")
        if not low <= value <= high:
            raise CoercionError(f"{value} is outside the column's {bits}-bit range")
        return value

    return coerce


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise CoercionError("expected a number, got a boolean")
    try:
        number = float(value) if isinstance(value, int | float | str | decimal.Decimal) else None
    except (ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number):
        raise CoercionError(f"expected a finite number, got {_describe(value)}")
    return number


def to_decimal(value: Any) -> decimal.Decimal:
    """``value`` (a number or its text; else CoercionError) as a finite Decimal, a float's 15
    significant digits as the server casts it (0.1, not 0.1000000000000000055511151231257827).

    Args:
        value: The value given.

    Returns:
        The number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | decimal.Decimal):
        raise CoercionError(f"expected a decimal number, got {_describe(value)}")
    try:
        text = format(value, ".15g") if isinstance(value, float) else value
        number = decimal.Decimal(text.strip() if isinstance(text, str) else text)
    except (decimal.InvalidOperation, ValueError):
        raise CoercionError(f"expected a decimal number, got {_describe(value)}") from None
    if not number.is_finite():
        raise CoercionError(f"expected a finite decimal number, got {_describe(value)}")
    return number


def _decimal_coercer(precision: int | None, scale: int | None) -> Callable[[Any], decimal.Decimal]:
    # a filter's value the column cannot hold is refused, not rounded (writes: query.inputs)
    max_scale = 28 if scale is None else scale
    max_integer_digits = 28 if precision is None else precision - (scale or 0)

    def coerce(value: Any) -> decimal.Decimal:
        number = to_decimal(value)
        _, digits, exponent = number.as_tuple()
        places = -int(exponent) - (len(digits) - len(bytes(digits).rstrip(b"\0")))  # 1.50: one
        if places > max_scale:
            raise CoercionError(
                f"{_describe(value)} has more decimal places than the column's {max_scale}"
            )
        if any(digits) and len(digits) + int(exponent) > max_integer_digits:
            raise CoercionError(f"{_describe(value)} has more digits than the column holds")
        return number

    return coerce


def _to_str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | decimal.Decimal):
        raise CoercionError(f"expected a string, got {_describe(value)}")
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        # PostgreSQL cannot store NUL in text, so no row can hold it; refusing here keeps the
        # backends and the in-memory repository in agreement
        raise CoercionError("text values cannot contain NUL characters")
    return text


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise CoercionError(f"expected a boolean, got {_describe(value)}")


def _datetime_coercer(aware: bool) -> Callable[[Any], dt.datetime]:
    def coerce(value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise CoercionError(f"expected an ISO 8601 datetime, got {value!r:.60}") from None
        if not isinstance(value, dt.datetime):
            raise CoercionError(f"expected a datetime, got {_describe(value)}")
        # naive values in aware columns are taken as UTC, aware values in naive columns are
        # stored as UTC: the convention that keeps comparisons valid on both backends
        if aware and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        if not aware and value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    return coerce


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise CoercionError("expected a date, got a datetime")
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise CoercionError(f"expected an ISO 8601 date, got {value!r:.60}") from None
    if not isinstance(value, dt.date):
        raise CoercionError(f"expected a date, got {_describe(value)}")
    return value


def _to_time(value: Any) -> dt.time:
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            raise CoercionError(f"expected an ISO 8601 time, got {value!r:.60}") from None
    if not isinstance(value, dt.time):
        raise CoercionError(f"expected a time, got {_describe(value)}")
    return value


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    raise CoercionError(f"expected a UUID, got {_describe(value)}")


def _enum_coercer(type_: sa.Enum) -> Callable[[Any], Any]:
    enum_class = type_.enum_class
    if enum_class is not None:
        members: dict[str, Any] = dict(enum_class.__members__)
    else:
        members = {name: name for name in type_.enums}

    def coerce(value: Any) -> Any:
        if enum_class is not None and isinstance(value, enum_class):
            return value
        if isinstance(value, str) and value in members:
            return members[value]
        raise CoercionError(f"expected one of {', '.join(members)}, got {_describe(value)}")

    return coerce


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
