"""``CHAR(n)`` columns as PostgreSQL keeps them: a text shorter than ``n`` padded with spaces to
``n``. No I/O.

PostgreSQL pads what it stores in a ``CHAR(n)`` (``'ab'`` in a ``CHAR(5)`` reads back
``'ab   '``) and compares such values as padded, so a filter of ``'ab'`` finds the rows given
``'ab'`` and ``'ab '`` alike; SQLite and the in-memory repository kept the text as given, read
``'ab'`` back and found one of the two. SQLite's CHAR now pads what it is sent (`PaddedChar`),
the in-memory repository keeps padded values, and the repositories' filters compare with the
padded value; a LIKE pattern is matched against the padded text, as PostgreSQL matches it.

PostgreSQL orders and compares ``CHAR(n)`` values without their trailing spaces (``bpchar``'s
rule), so ``'a'`` sorts below ``'a\t'``; SQLite and the in-memory repository compared the padded
texts, where ``'a  '`` sorts above ``'a\t '`` (a tab is below a space), and gave another order,
other ``gt``/``lt`` answers and another keyset walk. The repositories' filters, sorts and cursors
compare such a column as `compared` gives it (``COLLATE RTRIM`` on SQLite, SQLite's collation
that ignores trailing spaces), and the in-memory repository its values as `unpadded` does.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["PaddedChar", "char_length", "compared", "padded", "unpadded"]


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


def unpadded(value: Any, length: int | None) -> Any:
    """``value`` as PostgreSQL compares a ``CHAR(length)`` value: without its trailing spaces.

    Args:
        value: A value of the column, or compared with it (a list or tuple: each of them).
        length: The column's `char_length`, or None for a column of another type.

    Returns:
        The text without its trailing spaces, or ``value`` as it is.
    """
    if length is not None and type(value) is str:
        return value.rstrip(" ")
    if length is not None and isinstance(value, list | tuple):
        return [unpadded(v, length) for v in value]
    return value


class _Blank(sa.ColumnElement[Any]):
    """A ``CHAR(n)`` column in a comparison or a sort: ``COLLATE RTRIM`` on SQLite."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: sa.ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Blank)
def _compile_blank(element: _Blank, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_Blank, "sqlite")
def _compile_blank_sqlite(element: _Blank, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} COLLATE RTRIM"


def compared(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``column`` as a filter, a sort or a cursor compares it: a ``CHAR(n)`` one without its
    trailing spaces, as PostgreSQL compares it; any other as it is.

    Args:
        column: A mapped column.

    Returns:
        The expression to compare.
    """
    return _Blank(column) if char_length(column.type) is not None else column
