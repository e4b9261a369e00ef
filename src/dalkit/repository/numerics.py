"""Floats for NUMERIC columns in psycopg's binary COPY, whose numeric dumper refuses them where
add() stores them: made the Decimal that add() stores. add() sends a float as float8, which the
server casts to numeric through its 15 significant digits (float8_numeric prints it with
``%.15g``), so ``Decimal(format(value, ".15g"))`` is that very value; the column's scale then
rounds it on the server either way (checked against add() on 6,000 floats).

Only a load with a float among a NUMERIC column's values pays the conversion (~1 us a float,
0.1 s per 100k): the others are found so by one C-speed pass over the column (~3-5 ms per 100k
rows) and keep their plan, with no stage added to every row.
"""

from __future__ import annotations

import dataclasses
import decimal
import operator
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.schema import ColumnDefault

from dalkit.query.fields import FieldInfo
from dalkit.repository.copy import BulkPlan

__all__ = ["converting_float_numerics", "float_as_numeric"]


def float_as_numeric(value: Any) -> Any:
    """``value``, a float made the Decimal the server would cast it to."""
    return decimal.Decimal(format(value, ".15g")) if isinstance(value, float) else value


def converting_float_numerics(plan: BulkPlan, rows: Sequence[Any]) -> BulkPlan:
    """``plan``, converting the floats of each NUMERIC column that may get one: a float among
    the caller's values, or a default that is a float or a function."""
    processors: list[Callable[[Any], Any] | None] = list(plan.processors)
    for at, field in enumerate(plan.fields):
        if processors[at] is None and _is_numeric(field) and _may_get_float(plan, at, rows):
            processors[at] = float_as_numeric
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
