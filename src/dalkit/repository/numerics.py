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
C-speed pass over the column finds it: ~7 ms per 100k rows).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.schema import ColumnDefault

from dalkit.engine.column_types import ZONE_CONVERSIONS
from dalkit.engine.numbers import float_as_numeric
from dalkit.query.fields import FieldInfo
from dalkit.repository.copy import BulkPlan

__all__ = ["converting_float_numerics", "zoning_datetimes"]


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


def zoning_datetimes(plan: BulkPlan, rows: Sequence[Any]) -> BulkPlan:
    """``plan`` without the zone conversion of each datetime column that its rows leave none
    to (PostgreSQL: all its values of the column's kind), saving a stage on every row."""
    processors: list[Callable[[Any], Any] | None] = list(plan.processors)
    for at, field in enumerate(plan.fields[: plan.key_count]):
        # dalkit's own conversion (not a type's own processor), the zone its dialect's type
        timezone = ZONE_CONVERSIONS.get(processors[at])  # type: ignore[arg-type]
        if timezone is not None and not _crosses_zones(field.name, timezone, rows):
            processors[at] = None
    return _with_processors(plan, processors)


def _crosses_zones(name: str, timezone: bool, rows: Sequence[Any]) -> bool:
    try:  # one C-speed pass: None values are filtered out, non-datetimes raise
        values = filter(None, map(operator.itemgetter(name), rows))
        zones = set(map(operator.attrgetter("tzinfo"), values))
    except (KeyError, TypeError, AttributeError):
        return True  # left to the processor, or to the load refusing the row by name
    return None in zones if timezone else bool(zones - {None})
