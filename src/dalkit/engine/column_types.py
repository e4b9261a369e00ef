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
keep it). It is refused instead (`DatabaseError`, or `BulkLoadError` naming the row), and so is
a NaN bound untyped by raw SQL (``db.sql``, ``text()``), which SQLite stored as NULL too, and
one in the values of driver SQL (``exec_driver_sql()``), which no type binds. A Decimal bound
untyped is sent as the float SQLite keeps for it (`dalkit.engine.numbers.untyped_decimal`):
sqlite3 refused it.

PostgreSQL ``real`` (``REAL``, a ``Float`` of precision 24 or less): a value is sent cast to
``real``, as the column holds it, and read back as the server writes it (psycopg's text; asyncpg
read the binary float, 0.10000000149011612 for 0.1). Compared as the 8-byte float given, the
0.1 stored matched no filter of 0.1, and a keyset cursor after it found it again, forever.
SQLite's such column holds the number PostgreSQL holds (`dalkit.engine.single_floats`).

Numbers (SQLite's NUMERIC and INTEGER, asyncpg's): `dalkit.engine.numbers`. SQLite's ``CHAR(n)``,
padded as PostgreSQL pads it: `dalkit.engine.fixed_chars`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql.sqltypes import NullType

from dalkit.engine.fixed_chars import PaddedChar
from dalkit.engine.numbers import (
    ExactNumeric,
    float_as_cast,
    integers,
    untyped_decimal,
    untyped_float,
)
from dalkit.engine.single_floats import is_single, real_as_stored, shortest

__all__ = ["BOUND_OPTION", "ZONE_CONVERSIONS", "install", "zoned_as_column"]

#: the execution option of driver SQL whose values the column types above have bound already
#: (the bulk loads'): not read again for a NaN, which costs a tenth of a SQLite load's time
BOUND_OPTION = "dalkit_values_bound"


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


def _refusing_nan(process: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """SQLite's bind ``process`` (or none) refusing a float NaN, which SQLite takes as NULL."""

    def refuse_nan(value: Any) -> Any:
        if isinstance(value, float | decimal.Decimal) and value != value:
            raise ValueError("SQLite cannot store a NaN: it would become NULL")
        return value if process is None else process(value)

    return refuse_nan


class _NaNRefusingFloat(sa.Float):  # type: ignore[type-arg]
    """A float column that refuses NaN, which SQLite would store as NULL; a ``real`` one holds
    its numbers as PostgreSQL does (`dalkit.engine.single_floats`)."""

    real = False  # whether the column was declared REAL (its adaptation here loses that)

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)  # type: ignore[no-untyped-call]
        if is_single(self, self.real):
            convert = process
            process = real_as_stored if convert is None else lambda v: convert(real_as_stored(v))
        return _refusing_nan(process)


class _NaNRefusingReal(_NaNRefusingFloat):
    """SQLite's adaptation of ``REAL``: a ``real`` column, whatever its precision."""

    real = True


class _NaNRefusingNull(NullType):
    """An untyped bind (raw SQL's ``text()``, ``db.sql``) refusing a float NaN, which SQLite
    stored as NULL and compared as NULL, where PostgreSQL keeps it and finds it equal to NaN;
    and taking a Decimal as SQLite keeps a number (`untyped_decimal`), which sqlite3 refused
    ("type 'decimal.Decimal' is not supported") where PostgreSQL stores it."""

    def bind_processor(self, dialect: Dialect) -> Any:
        return _refusing_nan(untyped_decimal)


def _has_nan(parameters: Any) -> bool:
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return any(isinstance(v, float | decimal.Decimal) and v != v for v in values or ())


def _refuse_driver_nan(dialect: Any) -> None:
    """Have ``dialect`` refuse a NaN in the parameters of driver SQL (``exec_driver_sql()``),
    which reach sqlite3 without a bind processor: SQLite stored it as NULL. A statement
    SQLAlchemy compiled has had its values bound by the types above, and is not read again."""
    execute, executemany = dialect.do_execute, dialect.do_executemany

    def refuse(parameters: Any, context: Any, many: bool) -> None:
        if context is None or context.compiled is not None:
            return
        if context.execution_options.get(BOUND_OPTION):
            return
        if any(_has_nan(row) for row in (parameters if many else [parameters])):
            raise dialect.loaded_dbapi.ProgrammingError(
                "SQLite cannot store a NaN: it would become NULL"
            )

    def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        refuse(parameters, context, False)
        execute(cursor, statement, parameters, context)

    def do_executemany(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        refuse(parameters, context, True)
        executemany(cursor, statement, parameters, context)

    dialect.do_execute, dialect.do_executemany = do_execute, do_executemany


class _AsyncpgNull(NullType):
    """asyncpg's untyped bind (raw SQL), sending a float as `untyped_float` makes it."""

    def bind_processor(self, dialect: Dialect) -> Any:
        return untyped_float


@functools.cache
def _single_cast(base: type[sa.Float], always: bool) -> type[sa.Float]:  # type: ignore[type-arg]
    """PostgreSQL's ``base`` float sending a value for a ``real`` column (``REAL``, a ``Float``
    of precision 24 or less; every one when ``always``) cast to ``real``, as the column holds
    it: compared as the 8-byte float given, ``0.1`` (stored as 0.100000001) matched no filter of
    0.1, ``gt 0.1`` matched it, and a keyset cursor after it (psycopg reads it back 0.1) found
    it again, page after page."""

    class SingleCast(base):  # type: ignore[valid-type,misc]
        def _single(self) -> bool:
            return is_single(self, always)

        def bind_expression(self, bindvalue: Any) -> Any:
            return sa.cast(bindvalue, sa.REAL) if self._single() else bindvalue

        def result_processor(self, dialect: Dialect, coltype: object) -> Any:
            process = super().result_processor(dialect, coltype)
            if not self._single():
                return process
            # as the server's text gives it, which psycopg reads: asyncpg's binary read gave
            # 0.10000000149011612 for the 0.1 psycopg gave
            return shortest if process is None else lambda value: shortest(process(value))

    return SingleCast


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
            sa.REAL: _NaNRefusingReal,
            NullType: _NaNRefusingNull,
            sa.Numeric: ExactNumeric,
            sa.CHAR: PaddedChar,
            sa.NCHAR: PaddedChar,
            **integers(dialect),
        }
        _refuse_driver_nan(dialect)
    elif dialect.name == "postgresql":
        base: Any = dialect.colspecs.get(sa.DateTime, sa.DateTime)
        changed = {sa.DateTime: _zoned_in_utc(base), DOMAIN: _DomainAsBase}
        floats: Any = dialect.colspecs.get(sa.Float, sa.Float)
        changed.update({sa.Float: _single_cast(floats, False), sa.REAL: _single_cast(floats, True)})
        if dialect.driver == "asyncpg":
            numeric: Any = dialect.colspecs.get(sa.Numeric, sa.Numeric)
            untyped: dict[type[Any], type[Any]] = {NullType: _AsyncpgNull}
            changed.update({sa.Numeric: float_as_cast(numeric), **untyped, **integers(dialect)})
    else:
        return
    dialect.colspecs = {**dialect.colspecs, **changed}
