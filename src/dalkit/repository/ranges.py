"""Integer bounds of the columns a bulk load writes, checked before any row is sent: psycopg's
binary COPY packs a Python int into the column's width and wraps one that does not fit (70000
into SMALLINT arrives as 4464), where the ORM path and asyncpg refuse it. Checked once per
integer column with ``min``/``max`` over the whole load, so a clean load pays two C-speed passes
per column; only a load that fails is searched row by row, to name the row.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from dalkit.errors import BulkLoadError
from dalkit.query.fields import FieldInfo
from dalkit.query.inputs import refusal

__all__ = ["check_integer_ranges"]

# subclasses before Integer, which they derive from
_WIDTHS: tuple[tuple[type[sa.types.TypeEngine[Any]], int], ...] = (
    (sa.SmallInteger, 16),
    (sa.BigInteger, 64),
    (sa.Integer, 32),
)


def _bounds(column: sa.ColumnElement[Any]) -> tuple[int, int] | None:
    for kind, bits in _WIDTHS:
        if isinstance(column.type, kind):
            half = 1 << (bits - 1)
            return -half, half - 1
    return None


def check_integer_ranges(
    fields: Sequence[FieldInfo],
    originals: Sequence[Any],
    tuples: Sequence[tuple[Any, ...]],
    *,
    offset: int = 0,
    column: Callable[[int], Iterable[Any]] | None = None,
) -> None:
    """Raise BulkLoadError naming the first row and column whose integer does not fit.

    ``column(at)`` gives the values of column ``at`` when that is cheaper than reading them
    from ``tuples``; ``offset`` is the position of ``tuples[0]`` in the caller's rows.
    """
    for at, field in enumerate(fields):
        bounds = _bounds(field.column)
        if bounds is None or not tuples:
            continue
        low, high = bounds
        # map(itemgetter) runs in C: 0.036 s -> ~0.01 s per column of 100k rows (bench/peers)
        values = list(map(operator.itemgetter(at), tuples) if column is None else column(at))
        if field.nullable:
            values = [value for value in values if value is not None]
        try:
            fits = not values or (low <= min(values) and max(values) <= high)
        except TypeError:  # mixed types: the driver or the server names those
            fits = False
        if fits:
            continue
        for index, row in enumerate(tuples):
            value = row[at]
            if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
                reason = f"{value} is out of range for its {field.column.type} column"
                raise BulkLoadError(
                    f"row {offset + index} cannot be written: "
                    f"{refusal(field.name, field, f'{reason} ({low} to {high})')}",
                    row_index=offset + index,
                    row=originals[index],
                )
