"""How dalkit's engines bind the column types whose meaning SQLAlchemy leaves to the driver or the
server: datetimes against time zones (SQLite and PostgreSQL), and float NaN (SQLite). No I/O.

SQLite ``DateTime``: SQLite keeps datetimes as text without a zone, and SQLAlchemy writes an
aware value's wall clock there, dropping its offset: ``12:00+05:00`` was stored as ``12:00``, five
hours off, so sorting, filtering and keyset cursors on such a column disagreed with PostgreSQL
and the in-memory repository (which compare instants), and reads gave back a naive value.
Aware values are now stored in UTC, and a ``DateTime(timezone=True)`` column reads them back
aware, as PostgreSQL's ``timestamptz`` does; the text sorts in time order, and dalkit's filters,
which take naive values in an aware column as UTC, compare like with like. An aware value in a
column without a time zone is stored in UTC too, as ``update()`` and ``upsert()`` store it.

PostgreSQL: a naive value in a ``DateTime(timezone=True)`` column is taken as UTC, and an aware
value in a ``DateTime()`` column is stored converted to UTC, as dalkit's filters, ``update()``,
SQLite and the in-memory repository do. psycopg sent the one as a ``timestamp`` and the other as
a ``timestamptz``, which the server converted in the session's ``TimeZone`` (on a server not
set to UTC, ``add()`` stored other values than ``update()``), and asyncpg refused an aware
value for a ``timestamp``. The bulk loads' COPY gets the same values (see ``zoned_as_column``).
A ``DOMAIN`` column is bound as its base type (SQLAlchemy binds it as nothing): one over
``DateTime`` follows the rule above, where psycopg let the server convert an aware value for a
domain over ``timestamp`` in the session's zone and asyncpg refused it with a raw TypeError.

SQLite ``Float``: SQLite stores a NaN as NULL, so a NaN written by ``add()``, ``update()``,
``upsert()`` or ``bulk_insert()`` became NULL silently (PostgreSQL and the in-memory repository
keep it). It is refused instead (`DatabaseError`, or `BulkLoadError` naming the row).

SQLite ``Numeric``: SQLite keeps NUMERIC as an 8-byte float (SQLAlchemy's documented caveat),
so a Decimal of more than 15 significant digits, or with more places than the column reads back
(its scale, or 10 without one), came back another number, and a NaN as NULL, silently, where
PostgreSQL and the in-memory repository keep them exact. Such a value is refused on every path,
as a NaN float is. A float is stored as PostgreSQL stores it: its 15 significant digits, rounded
half away from zero to the column's scale (SQLite read the binary float back rounded: 1.005,
which is 1.00499..., came back 1.00 from a ``Numeric(10, 2)`` where PostgreSQL stores 1.01).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.engine import Dialect, Engine

__all__ = [
    "ZONE_CONVERSIONS",
    "float_as_numeric",
    "install",
    "numeric_as_stored",
    "zoned_as_column",
]


class _UTCDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, writing aware values in UTC and reading a zoned column's as UTC."""

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)
        if process is None:
            return process
        write = process

        def to_utc(value: Any) -> Any:
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return write(value)

        return to_utc

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        process = super().result_processor(dialect, coltype)
        if not self.timezone or process is None:
            return process
        read = process

        def as_utc(value: Any) -> Any:
            value = read(value)
            if isinstance(value, dt.datetime) and value.tzinfo is None:
                return value.replace(tzinfo=dt.UTC)
            return value

        return as_utc


class _NaNRefusingFloat(sa.Float):  # type: ignore[type-arg]
    """A float column that refuses NaN, which SQLite would store as NULL."""

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)  # type: ignore[no-untyped-call]

        def refuse_nan(value: Any) -> Any:
            if isinstance(value, float) and value != value:
                raise ValueError("SQLite cannot store a float NaN: it would become NULL")
            return value if process is None else process(value)

        return refuse_nan


class _ExactNumeric(sa.Numeric):  # type: ignore[type-arg]
    """A NUMERIC column on SQLite refusing a value that would not come back as written."""

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)  # type: ignore[no-untyped-call]
        read = self.result_processor(dialect, None) if self.asdecimal else None  # type: ignore[no-untyped-call]

        scale = self.scale

        def refuse_inexact(value: Any) -> Any:
            if isinstance(value, float | decimal.Decimal) and value != value:
                raise ValueError("SQLite cannot store a NaN in a NUMERIC column: it would be NULL")
            if isinstance(value, float):
                return _as_postgresql_numeric(value, scale)
            if read is not None and isinstance(value, decimal.Decimal) and value.is_finite():
                back = read(float(value))
                if back != value:
                    raise ValueError(
                        f"SQLite keeps NUMERIC as a float: {value} would be read back as {back}"
                    )
            return value if process is None else process(value)

        return refuse_inexact


def float_as_numeric(value: Any) -> Any:
    """``value``, a float made the Decimal PostgreSQL casts it to for a NUMERIC column.

    Args:
        value: The value written.

    Returns:
        A float's 15 significant digits as a Decimal (float8_numeric prints it with ``%.15g``),
        anything else unchanged.
    """
    return decimal.Decimal(format(value, ".15g")) if isinstance(value, float) else value


#: wide enough to round any finite float to any scale PostgreSQL allows (at most 1000)
_ROUNDING = decimal.Context(prec=1400, rounding=decimal.ROUND_HALF_UP)


def numeric_as_stored(value: float | decimal.Decimal, scale: int | None) -> decimal.Decimal:
    """``value`` as PostgreSQL stores it in a NUMERIC column of ``scale``: a float cast through
    its 15 significant digits, rounded half away from zero to the scale (1.005 is 1.01).

    Args:
        value: A finite number (an int is a Decimal's equal).
        scale: The column's scale; None keeps every place.

    Returns:
        The stored number.
    """
    exact = decimal.Decimal(float_as_numeric(value))
    if scale is None:
        return exact
    return exact.quantize(decimal.Decimal(1).scaleb(-scale), context=_ROUNDING)


def _as_postgresql_numeric(value: float, scale: int | None) -> float:
    """The float SQLite gets for ``value`` in a NUMERIC column of ``scale``, so that it reads
    back what PostgreSQL stores (`numeric_as_stored`: 1.005 is 1.01, where SQLite's read
    rounded the binary 1.00499999... to 1.00)."""
    return value if math.isinf(value) else float(numeric_as_stored(value, scale))


def zoned_as_column(value: Any, timezone: bool) -> Any:
    """``value`` as a column with (``timezone``) or without a time zone stores it: a naive
    datetime made UTC-aware, an aware one made naive in UTC; anything else unchanged.

    Args:
        value: The value written.
        timezone: Whether the column is a ``timestamptz``.

    Returns:
        The value the driver gets.
    """
    if isinstance(value, dt.datetime) and (value.tzinfo is None) == timezone:
        if timezone:
            return value.replace(tzinfo=dt.UTC)
        if value.utcoffset() is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _to_zoned(value: Any) -> Any:
    return zoned_as_column(value, True)


def _to_naive(value: Any) -> Any:
    return zoned_as_column(value, False)


#: The processors that only convert across zones (a DateTime with no processor of its own),
#: each with whether its column is a ``timestamptz`` (the type of the engine's dialect: a
#: variant's may differ from the column's own): a bulk load whose values cross no zone drops
#: them (`dalkit.repository.numerics`).
ZONE_CONVERSIONS = {_to_zoned: True, _to_naive: False}


@functools.cache
def _zoned_in_utc(base: type[sa.DateTime]) -> type[sa.DateTime]:
    """``base`` (the PostgreSQL driver's DateTime) writing values across zones in UTC."""

    class ZonedInUTC(base):  # type: ignore[valid-type,misc]
        def bind_processor(self, dialect: Dialect) -> Any:
            process = super().bind_processor(dialect)
            convert = _to_zoned if self.timezone else _to_naive
            if process is None:
                return convert
            return lambda value: process(convert(value))

    return ZonedInUTC


class _DomainAsBase(DOMAIN):
    """A PostgreSQL domain whose values are bound as its base type's."""

    def bind_processor(self, dialect: Dialect) -> Any:
        return self.data_type.dialect_impl(dialect).bind_processor(dialect)


def install(engine: Engine) -> None:
    """Bind ``engine``'s datetimes (and on SQLite its floats) as this module says.

    Args:
        engine: The engine (the sync one under an AsyncEngine), before its first statement.
    """
    dialect = engine.dialect
    # per engine, not the dialect class's attribute: other engines of the process keep
    # SQLAlchemy's own behaviour
    changed: dict[type[Any], type[Any]]
    if dialect.name == "sqlite":
        changed = {
            sa.DateTime: _UTCDateTime,
            sa.Float: _NaNRefusingFloat,
            sa.Numeric: _ExactNumeric,
        }
    elif dialect.name == "postgresql":
        base: Any = dialect.colspecs.get(sa.DateTime, sa.DateTime)
        changed = {sa.DateTime: _zoned_in_utc(base), DOMAIN: _DomainAsBase}
    else:
        return
    dialect.colspecs = {**dialect.colspecs, **changed}
