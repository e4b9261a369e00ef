"""PostgreSQL's ``real`` (``REAL``, a ``Float`` of precision 24 or less): a 4-byte float, and
the number SQLite and the in-memory repository hold for such a column. No I/O.

PostgreSQL rounds what it stores in a ``real`` to 4 bytes (0.123456789 reads back 0.12345679,
16777217.0 as 16777216.0) and refuses a number past the 4-byte range ("value out of range:
overflow", or "underflow" for one that would become 0). SQLite and the in-memory repository
kept the 8-byte float given, read it back so, matched a filter of the rounded number to
nothing, and stored 1e39. They hold `real_as_stored` now, and filters compare with it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import sqlalchemy as sa

__all__ = ["is_single", "real_as_stored", "shortest"]


def is_single(type_: Any, always: bool = False) -> bool:
    """Whether a column of ``type_`` is PostgreSQL's 4-byte ``real``.

    Args:
        type_: A column's SQLAlchemy type.
        always: Whether any float type counts (the engine's adaptation of ``REAL`` itself).

    Returns:
        True for ``REAL`` and a ``Float`` of precision 24 or less.
    """
    if not isinstance(type_, sa.Float):
        return False
    precision = type_.precision
    return always or isinstance(type_, sa.REAL) or (precision is not None and precision <= 24)


def shortest(value: Any) -> Any:
    """A 4-byte float's shortest decimal spelling, as PostgreSQL writes a ``real``.

    Args:
        value: A float holding a 4-byte float's value, or anything else.

    Returns:
        The shortest float that is the same 4-byte float; anything else as it is.
    """
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    packed = struct.pack("f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("f", candidate) == packed:
            return candidate
    return value


def real_as_stored(value: Any) -> Any:
    """``value`` as a PostgreSQL ``real`` holds it and psycopg reads it back: rounded to
    4 bytes, spelled shortest (`shortest`).

    Args:
        value: A number; anything else (None, a NaN, an infinity) is returned as it is.

    Returns:
        The float the column holds.

    Raises:
        ValueError: A finite number past the 4-byte range ("value out of range: overflow"),
            or not 0 and smaller than its least number ("underflow"), as PostgreSQL refuses it.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return value
    try:  # standard size: the native "f" made 1e39 inf
        (single,) = struct.unpack("<f", struct.pack("<f", value))
    except OverflowError:
        raise ValueError("value out of range: overflow") from None
    if single == 0.0 and value != 0:
        raise ValueError("value out of range: underflow")
    return shortest(single)
