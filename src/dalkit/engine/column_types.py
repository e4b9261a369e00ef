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

PostgreSQL ``DateTime(timezone=True)``: a naive value is taken as UTC, as dalkit's filters,
``update()``, asyncpg and the in-memory repository take it. psycopg sent it as a ``timestamp``,
which the server read in the session's ``TimeZone``: on a server not set to UTC, ``add()``
stored another instant than ``update()`` and than the same ``add()`` under asyncpg.

SQLite ``Float``: SQLite stores a NaN as NULL, so a NaN written by ``add()``, ``update()``,
``upsert()`` or ``bulk_insert()`` became NULL silently (PostgreSQL and the in-memory repository
keep it). It is refused instead (`DatabaseError`, or `BulkLoadError` naming the row).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect, Engine

__all__ = ["install"]


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


@functools.cache
def _naive_as_utc(base: type[sa.DateTime]) -> type[sa.DateTime]:
    """``base`` (the PostgreSQL driver's DateTime) taking naive values of a zoned column as UTC."""

    class NaiveAsUTC(base):  # type: ignore[valid-type,misc]
        def bind_processor(self, dialect: Dialect) -> Any:
            process = super().bind_processor(dialect)
            if not self.timezone:
                return process

            def as_utc(value: Any) -> Any:
                if isinstance(value, dt.datetime) and value.tzinfo is None:
                    value = value.replace(tzinfo=dt.UTC)
                return value if process is None else process(value)

            return as_utc

    return NaiveAsUTC


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
        changed = {sa.DateTime: _UTCDateTime, sa.Float: _NaNRefusingFloat}
    elif dialect.name == "postgresql":
        base: Any = dialect.colspecs.get(sa.DateTime, sa.DateTime)
        changed = {sa.DateTime: _naive_as_utc(base)}
    else:
        return
    dialect.colspecs = {**dialect.colspecs, **changed}
