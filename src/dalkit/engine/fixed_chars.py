"""``CHAR(n)`` columns as PostgreSQL keeps them: a text shorter than ``n`` padded with spaces to
``n``. No I/O.

PostgreSQL pads what it stores in a ``CHAR(n)`` (``'ab'`` in a ``CHAR(5)`` reads back
``'ab   '``) and compares such values as padded, so a filter of ``'ab'`` finds the rows given
``'ab'`` and ``'ab '`` alike; SQLite and the in-memory repository kept the text as given, read
``'ab'`` back and found one of the two. SQLite's CHAR now pads what it is sent (`PaddedChar`),
the in-memory repository keeps padded values, and the repositories' filters compare with the
padded value; a LIKE pattern is matched against the padded text, as PostgreSQL matches it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = ["PaddedChar", "char_length", "padded"]


def char_length(type_: Any) -> int | None:
    """The length ``n`` of a ``CHAR(n)`` (or ``NCHAR(n)``) column type, else None.

    Args:
        type_: A column's SQLAlchemy type.

    Returns:
        ``n``, or None for any other type (a ``CHAR`` without a length included).
    """
    if isinstance(type_, sa.CHAR | sa.NCHAR) and isinstance(type_.length, int):
        return type_.length
    return None


def padded(value: Any, length: int | None) -> Any:
    """``value`` as a ``CHAR(length)`` column holds it: a text shorter than ``length`` padded
    with spaces; any other value (a longer text, which is refused elsewhere) as it is.

    Args:
        value: A value written to or compared with the column.
        length: The column's `char_length`, or None for a column of another type.

    Returns:
        The padded text, or ``value``.
    """
    if length is not None and type(value) is str and len(value) < length:
        return value.ljust(length)
    return value


class PaddedChar(sa.CHAR):
    """SQLite's CHAR, storing a text padded to the column's length as PostgreSQL stores it."""

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)
        length = char_length(self)
        if length is None:
            return process
        if process is None:
            return lambda value: padded(value, length)
        convert = process
        return lambda value: convert(padded(value, length))
