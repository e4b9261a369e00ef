"""Bulk values that PostgreSQL's COPY would take otherwise than add() stores them.

Floats for NUMERIC columns in psycopg's binary COPY, whose numeric dumper refuses them where
add() stores them: made the Decimal that add() stores. add() sends a float as float8, which the
server casts to numeric through its 15 significant digits (float8_numeric prints it with
``%.15g``), so ``Decimal(format(value, ".15g"))`` is that very value; the column's scale then
rounds it on the server either way (checked against add() on 6,000 floats).

Only a load with a float among a NUMERIC column's values pays the conversion (~1 us a float,
0.1 s per 100k): the others are found so by one C-speed pass over the column (~3-5 ms per 100k
rows) and keep their plan, with no stage added to every row.

Datetimes across zones (an aware value for a ``timestamp``, a naive one for a ``timestamptz``):
the column type's processor (`dalkit.engine.column_types`) converts them as add() does, where
the drivers' COPY refused them; kept only for a column with such a value or a default (one
C-speed pass over the column finds it: ~7 ms per 100k rows). A psycopg load makes that pass
while the server works through its COPY, with the type check (`unzoned`, `crosses_zones`):
when it finds a value across zones, the COPY is aborted and the load redone converted. A load
whose first row has one is converted from the start.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.schema import ColumnDefault

from dalkit.engine.column_types import ZONE_CONVERSIONS
from dalkit.engine.numbers import float_as_numeric
from dalkit.query.fields import FieldInfo, ModelInfo
from dalkit.repository.copy import BulkPlan, plan_bulk

__all__ = [
    "Zones",
    "converting_float_numerics",
    "crosses_zones",
    "streamed_plan",
    "unzoned",
    "zoning_datetimes",
]


def converting_float_numerics(plan: BulkPlan, rows: Sequence[Any]) -> BulkPlan:
    """``plan``, converting the floats of each NUMERIC column that may get one: a float among
    the caller's values, or a default that is a float or a function."""
    processors: list[Callable[[Any], Any] | None] = list(plan.processors)
    for at, field in enumerate(plan.fields):
        if processors[at] is None and _is_numeric(field) and _may_get_float(plan, at, rows):
            processors[at] = float_as_numeric
    return _with_processors(plan, processors)


def _with_processors(plan: BulkPlan, processors: list[Callable[[Any], Any] | None]) -> BulkPlan:
    """``plan`` with ``processors``: the same plan when none changed."""
    if processors == list(plan.processors):
        return plan
    return dataclasses.replace(plan, processors=tuple(processors))


def _is_numeric(field: FieldInfo) -> bool:
    kind = field.column.type
    return isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float)  # Float is float8


def _may_get_float(plan: BulkPlan, at: int, rows: Sequence[Any]) -> bool:
    if at >= plan.key_count:  # filled by its default (an update's: its onupdate)
        column = plan.fields[at].column
        default = column.onupdate if plan.update_keys else column.default
        if isinstance(default, ColumnDefault) and default.is_scalar:
            return isinstance(default.arg, float)
        return True  # a function's values are only known as the load makes them
    try:
        kinds = set(map(type, map(operator.itemgetter(plan.fields[at].name), rows)))
    except (KeyError, TypeError):  # a row of another shape, which the load refuses by name
        return False
    return any(issubclass(kind, float) for kind in kinds)


#: the name and zone kind (True: ``timestamptz``) of each column whose zone conversion a plan
#: left out unchecked
Zones = tuple[tuple[str, bool], ...]


def zoning_datetimes(plan: BulkPlan, rows: Sequence[Any]) -> BulkPlan:
    """``plan`` without the zone conversion of each datetime column that its rows leave none
    to (PostgreSQL: all its values of the column's kind), saving a stage on every row."""
    return _dropping_zones(plan, lambda name, timezone: not _crosses_zones(name, timezone, rows))[0]


def unzoned(plan: BulkPlan) -> tuple[BulkPlan, Zones]:
    """``plan`` without any zone conversion of the caller's datetimes, and the columns they
    were for: the rows' values there must then be checked (`crosses_zones`) before the load
    ends, and the load redone with ``zoning_datetimes(plan, rows)`` if one crosses zones."""
    return _dropping_zones(plan, lambda name, timezone: True)


def streamed_plan(
    info: ModelInfo, rows: Sequence[Any], dialect: Dialect, *, typed: bool
) -> tuple[BulkPlan, Zones]:
    """The plan of a psycopg load of ``rows``, whose tuples are made while COPY reads them, and
    the columns whose zones the load must still check (`StreamedTuples.check`).

    Args:
        info: The rows' model.
        rows: The caller's rows (row 0 names the columns).
        dialect: The engine's dialect.
        typed: Whether the load is redone, its rows checked (their zones included).

    Returns:
        The plan, and the columns to check (none: the plan converts what needs it).
    """
    plan = plan_bulk(info, rows[0], dialect)
    zoneless, zones = unzoned(plan)
    if typed or crosses_zones(zones, rows[:1]):
        # a load redone, or one whose first row already crosses zones: converted throughout
        return zoning_datetimes(plan, rows), ()
    # rows not checked yet: their zones are checked with their types, while the server works
    # through the COPY, not in a pass before it: the pass took 6.9 ms of the 11.4 ms of CPU
    # before the COPY of bench/peers' 100k rows (sync, /work/prof23/writes/syncpre.py), whose
    # COPY takes ~150 ms; its wall time, dalkit/psycopg per round: 0.826x against 0.784x with
    # the pass before (medians of 7 interleaved rounds, load average 11, zones_ab.py there)
    return zoneless, zones


def crosses_zones(
    zones: Zones, rows: Sequence[Any], columns: Mapping[str, Sequence[Any]] | None = None
) -> bool:
    """Whether a value of ``rows`` in one of the columns ``zones`` names needs its zone
    conversion (or is not a datetime, which the conversion refuses naming its row); read from
    ``columns`` (values by field, `dalkit.repository.values.ColumnValues`) when given."""
    return any(_crosses_zones(name, timezone, rows, columns) for name, timezone in zones)


def _dropping_zones(plan: BulkPlan, drop: Callable[[str, bool], bool]) -> tuple[BulkPlan, Zones]:
    processors: list[Callable[[Any], Any] | None] = list(plan.processors)
    dropped: list[tuple[str, bool]] = []
    for at, field in enumerate(plan.fields[: plan.key_count]):
        # dalkit's own conversion (not a type's own processor), the zone its dialect's type
        timezone = ZONE_CONVERSIONS.get(processors[at])  # type: ignore[arg-type]
        if timezone is not None and drop(field.name, timezone):
            processors[at] = None
            dropped.append((field.name, timezone))
    return _with_processors(plan, processors), tuple(dropped)


def _crosses_zones(
    name: str,
    timezone: bool,
    rows: Sequence[Any],
    columns: Mapping[str, Sequence[Any]] | None = None,
) -> bool:
    try:  # one C-speed pass: None values are filtered out, non-datetimes raise
        given = map(operator.itemgetter(name), rows) if columns is None else columns[name]
        values = filter(None, given)
        zones = set(map(operator.attrgetter("tzinfo"), values))
    except (KeyError, TypeError, AttributeError):
        return True  # left to the processor, or to the load refusing the row by name
    return None in zones if timezone else bool(zones - {None})
