"""How dalkit's engines bind numbers whose meaning SQLAlchemy leaves to the driver or the
server: SQLite's NUMERIC and INTEGER, asyncpg's NUMERIC and INTEGER, as PostgreSQL stores them
(psycopg's way, the server casting what it is sent). Installed by `dalkit.engine.column_types`.
No I/O.

SQLite ``Numeric``: SQLite keeps NUMERIC as an 8-byte float (SQLAlchemy's documented caveat),
so a Decimal of more than 15 significant digits came back another number (and one of more
than 10 places in a column without a scale, read back at 10 places), and a NaN as NULL,
silently, where PostgreSQL and the in-memory repository keep them exact: such a value is
refused on every path, as a NaN float is. Any other number is stored as PostgreSQL stores it
(`numeric_as_stored`): a float through its 15 significant digits, rounded half away from zero
to the column's scale (SQLite read the binary float back rounded: 1.005, which is 1.00499...,
came back 1.00 from a ``Numeric(10, 2)`` where PostgreSQL stores 1.01), and a Decimal rounded
the same way (it was refused); a number past the precision is refused, as PostgreSQL's
"numeric field overflow" (SQLite stored it). SQL compiled with ``literal_binds`` renders the
stored number, and a float that raw SQL wrote is read back as PostgreSQL would have stored it.
SQLite ``Integer``: a float or a Decimal is rounded as the server casts it (SQLite stored 3.5
and refused a Decimal); a number past PostgreSQL's range for the column, which SQLite stored,
and a NaN or an infinity, which it stored as NULL or as a float, are refused ("integer out of
range").

asyncpg ``Numeric``: a float is sent as the Decimal of its 15 significant digits, the number
the server casts psycopg's ``float8`` to; asyncpg sent its binary value (1.005 was stored 1.00).
A float bound untyped (raw SQL) is sent so too, to a NUMERIC parameter (`untyped_float`).
asyncpg ``Integer``: a float or a Decimal is rounded as the server casts psycopg's (asyncpg cut
3.5 to 3 where psycopg stored 4), as SQLite's are.

Text for a number (a Core write): read as the server reads it, on SQLite and asyncpg as psycopg
sends it to the server (" 30 " is 30, "1.005" is 1.01 in a ``Numeric(6, 2)``), and refused as it
refuses what is no number ("invalid input syntax"): SQLite stored any text as it is ("thirty" in
an INTEGER), and asyncpg refused "30" for an INTEGER.

A refusal names no value, only the rule it breaks: a value written may be a secret.
"""

from __future__ import annotations

import decimal
import functools
import math
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "ExactNumeric",
    "float_as_cast",
    "float_as_numeric",
    "integers",
    "numeric_as_stored",
    "numeric_overflows",
    "numeric_typmod",
    "stored_numeric",
    "untyped_decimal",
    "untyped_float",
]


class ExactNumeric(sa.Numeric):  # type: ignore[type-arg]
    """A NUMERIC column on SQLite storing a number as PostgreSQL stores it (`numeric_as_stored`),
    refusing one PostgreSQL refuses (`numeric_overflows`), and one that would not come back."""

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)  # type: ignore[no-untyped-call]
        read = self.result_processor(dialect, None) if self.asdecimal else None
        precision, scale = numeric_typmod(self)

        def as_postgresql(value: Any) -> Any:
            if isinstance(value, str):  # read as the server reads it (SQLite stored any text)
                value = _from_text(value, _NUMERIC_TEXT, decimal.Decimal, "numeric")
            if isinstance(value, float | decimal.Decimal) and value != value:
                raise ValueError("SQLite cannot store a NaN in a NUMERIC column: it would be NULL")
            if isinstance(value, bool):  # as PostgreSQL: no cast from boolean to numeric
                raise ValueError("a NUMERIC column takes no boolean")
            if not isinstance(value, int | float | decimal.Decimal):
                return value if process is None else process(value)
            stored = stored_numeric(value, precision, scale)
            if isinstance(value, int):  # kept as it is (SQLite's integers are exact)
                return value if process is None else process(value)
            if isinstance(value, float):
                return float(stored)
            if read is not None and stored.is_finite():
                back = read(float(stored))
                if back != stored:
                    raise ValueError(
                        f"SQLite keeps NUMERIC as a float: {value} would be read back as {back}"
                    )
            return stored if process is None else process(stored)

        return as_postgresql

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        process = super().result_processor(dialect, coltype)  # type: ignore[no-untyped-call]
        if not self.asdecimal:
            # a float, as PostgreSQL's drivers give it: SQLite gave the int it keeps for a
            # whole number (2 for 2.0)
            return _float_of if process is None else lambda value: _float_of(process(value))
        if process is None:
            return process
        # without a scale, the number as it is (its 15 significant digits, as PostgreSQL keeps
        # a float8 cast to numeric), where SQLAlchemy read 10 places (1/3 lost 5 digits)
        exact = self.scale is None and self.decimal_return_scale is None
        places = None if exact else self._effective_decimal_return_scale
        convert = process

        def as_postgresql(value: Any) -> Any:
            # a float written by raw SQL is read as PostgreSQL would have stored it (1.005 is
            # 1.01), where SQLAlchemy's read rounded the binary float (1.00)
            if type(value) is float and math.isfinite(value):
                return numeric_as_stored(value, places)
            return decimal.Decimal(value) if exact and type(value) is int else convert(value)

        return as_postgresql if self.asdecimal else process

    def literal_processor(self, dialect: Dialect) -> Any:
        process = super().literal_processor(dialect)  # type: ignore[no-untyped-call]
        precision, scale = numeric_typmod(self)

        def as_postgresql(value: Any) -> Any:
            # the bound value's rounding (1.005 is 1.01), where the text of the float was
            # stored as it is and read back rounded the binary way (1.00)
            if _is_number(value) and value == value:
                stored = stored_numeric(value, precision, scale)
                value = value if isinstance(value, int) else stored
            return process(value)

        return as_postgresql


def stored_numeric(
    value: float | decimal.Decimal, precision: int | None, scale: int | None
) -> decimal.Decimal:
    """``value`` as PostgreSQL stores it in a NUMERIC of ``precision`` and ``scale``
    (`numeric_as_stored`), or the ValueError of its "numeric field overflow": more integer
    digits than the precision leaves, or an infinity in a column with a precision.

    Args:
        value: A number, not a NaN.
        precision: The column's precision (`numeric_typmod`).
        scale: The column's scale.

    Returns:
        The stored number.

    Raises:
        ValueError: PostgreSQL refuses it.
    """
    if not decimal.Decimal(value).is_finite():
        if precision is None:
            return decimal.Decimal(value)
        raise ValueError(f"numeric field overflow: a value does not fit NUMERIC({precision})")
    stored = numeric_as_stored(value, scale)
    if numeric_overflows(stored, precision, scale):
        raise ValueError(
            f"numeric field overflow: a value does not fit NUMERIC({precision}, {scale})"
        )
    return stored


def _float_of(value: Any) -> Any:
    return float(value) if type(value) is int else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def numeric_typmod(type_: Any) -> tuple[int | None, int | None]:
    """The precision and scale a NUMERIC column has on PostgreSQL: none without a precision
    (SQLAlchemy's DDL leaves a scale alone out then), else the precision and the scale or 0.

    Args:
        type_: The column's type.

    Returns:
        The precision and the scale, each None for none.
    """
    precision = getattr(type_, "precision", None)
    if precision is None:
        return None, None
    return precision, getattr(type_, "scale", None) or 0


def numeric_overflows(stored: decimal.Decimal, precision: int | None, scale: int | None) -> bool:
    """Whether ``stored`` (a finite number at the column's scale) has more integer digits than
    a NUMERIC of ``precision`` and ``scale`` holds: PostgreSQL's "numeric field overflow".

    Args:
        stored: The number, as `numeric_as_stored` gives it.
        precision: The column's precision (None: any number of digits).
        scale: The column's scale.

    Returns:
        True when PostgreSQL refuses it.
    """
    if precision is None or not stored:
        return False
    return stored.adjusted() + 1 > precision - (scale or 0)


@functools.cache
def _ranged_integer(base: type[sa.Integer], bits: int) -> type[sa.Integer]:
    """SQLite's ``base`` storing what PostgreSQL's integer of ``bits`` stores: a float or a
    Decimal rounded as the server casts it (a float half to even, a Decimal half away from
    zero), where SQLite stored 3.5 as it is and refused a Decimal; refused, as "integer out of
    range", a number past the range, which SQLite stored, and a NaN or an infinity, which it
    stored as NULL or as a float."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    class RangedInteger(base):  # type: ignore[valid-type,misc]
        def unchecked_bind_processor(self, dialect: Dialect) -> Any:
            """The driver's own processor, for a load whose values are checked otherwise."""
            return super().bind_processor(dialect)

        def bind_processor(self, dialect: Dialect) -> Any:
            process = super().bind_processor(dialect)

            def as_postgresql(value: Any) -> Any:
                if isinstance(value, str):  # SQLite stored any text, asyncpg refused "30"
                    value = _from_text(value, _INTEGER_TEXT, int, "integer")
                if type(value) is float or isinstance(value, decimal.Decimal):
                    if not decimal.Decimal(value).is_finite():
                        raise ValueError("integer out of range: a NaN or an infinity")
                    value = (
                        int(_half_up(value)) if isinstance(value, decimal.Decimal) else round(value)
                    )
                if type(value) is int and not low <= value <= high:
                    raise ValueError(f"integer out of range: a value is past {bits} bits")
                return value if process is None else process(value)

            return as_postgresql

    return RangedInteger


def integers(dialect: Dialect) -> dict[type[Any], type[Any]]:
    """The integer types of ``dialect`` (its own where it has them) as `_ranged_integer`.

    Args:
        dialect: The engine's dialect.

    Returns:
        Its colspecs for SQLAlchemy's integer types.
    """
    bits: dict[type[Any], int] = {sa.SmallInteger: 16, sa.Integer: 32, sa.BigInteger: 64}
    return {
        kind: _ranged_integer(dialect.colspecs.get(kind, kind), size)  # type: ignore[arg-type]
        for kind, size in bits.items()
    }


#: the text PostgreSQL 15 reads as an integer, and as a numeric (its digits ASCII, no "_")
_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_NUMERIC_TEXT = re.compile(
    r"\s*(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|[+-]?inf(?:inity)?)\s*",
    re.IGNORECASE,
)


def _from_text(text: str, syntax: re.Pattern[str], kind: type[Any], name: str) -> Any:
    """``text`` as the server reads it for a column of type ``name``, or its ValueError."""
    if not syntax.fullmatch(text):
        raise ValueError(f"invalid input syntax for type {name}: a text that is no {name}")
    return kind(text.strip())


def _half_up(value: decimal.Decimal) -> decimal.Decimal:
    return value.to_integral_value(rounding=decimal.ROUND_HALF_UP)


def float_as_numeric(value: Any) -> Any:
    """``value``, a float made the Decimal PostgreSQL casts it to for a NUMERIC column.

    Args:
        value: The value written.

    Returns:
        A float's 15 significant digits as a Decimal (float8_numeric prints it with ``%.15g``),
        anything else unchanged.
    """
    return decimal.Decimal(format(value, ".15g")) if isinstance(value, float) else value


def untyped_decimal(value: Any) -> Any:
    """``value``, a Decimal bound untyped on SQLite (raw SQL's ``text()``, ``db.sql``), as the
    8-byte float SQLite keeps a number as, when that float gives it back; anything else
    unchanged. sqlite3 refused every Decimal, where PostgreSQL stores it as it is.

    Args:
        value: The value bound.

    Returns:
        The float for a Decimal of at most 15 significant digits (or an infinity).

    Raises:
        ValueError: For a Decimal the float would change (more than 15 significant digits, or
            past the float's range): stored, it would be read back another number.
    """
    if not isinstance(value, decimal.Decimal) or value.is_nan():
        return value  # a NaN is refused by the caller, as a float NaN is
    number = float(value)
    if value.is_finite() and (
        not math.isfinite(number) or decimal.Decimal(format(number, ".15g")) != value
    ):
        raise ValueError(
            "SQLite keeps numbers as 8-byte floats: a Decimal of more than 15 significant digits"
            " or past a float's range would be read back as another number; round it, or bind"
            " it as a str"
        )
    return number


#: wide enough to round any finite float to any scale PostgreSQL allows (at most 1000)
_ROUNDING = decimal.Context(prec=1400, rounding=decimal.ROUND_HALF_UP)


def numeric_as_stored(value: float | decimal.Decimal, scale: int | None) -> decimal.Decimal:
    """``value`` as PostgreSQL stores it in a NUMERIC column of ``scale``: a float cast through
    its 15 significant digits, rounded half away from zero to the scale (1.005 is 1.01), and a
    zero without a sign (NUMERIC has no -0: the in-memory repository gave back -0.00).

    Args:
        value: A finite number (an int is a Decimal's equal).
        scale: The column's scale; None keeps every place.

    Returns:
        The stored number.
    """
    stored = decimal.Decimal(float_as_numeric(value))
    if scale is not None:
        stored = stored.quantize(decimal.Decimal(1).scaleb(-scale), context=_ROUNDING)
    return stored.copy_abs() if stored.is_zero() else stored


class _UntypedFloat(decimal.Decimal):
    """A float bound untyped through asyncpg, which encodes it for the type the server infers
    for its parameter: as a numeric, the Decimal of its 15 significant digits (the number the
    server casts psycopg's float8 to); as a float or an integer, the float itself, rounded half
    to even for an integer as the server casts it."""

    _float: float

    def __new__(cls, value: float) -> _UntypedFloat:
        made = super().__new__(cls, format(value, ".15g"))
        made._float = value
        return made

    def __float__(self) -> float:
        return self._float

    def __int__(self) -> int:
        return round(self._float)

    def __repr__(self) -> str:
        return repr(self._float)


def untyped_float(value: Any) -> Any:
    """``value``, a float bound untyped through asyncpg (raw SQL's ``text()``, ``db.sql``),
    made what psycopg's float8 becomes on the server: asyncpg encoded the float's binary value
    for a NUMERIC parameter (1.005 was stored 1.00 in a NUMERIC(6, 2) where psycopg stored 1.01,
    and 0.1 as 0.1000000000000000055511151231257827021181583404541015625 without a scale).

    Args:
        value: The value bound.

    Returns:
        A float as `_UntypedFloat`; anything else unchanged.
    """
    return _UntypedFloat(value) if type(value) is float else value


@functools.cache
def float_as_cast(base: type[sa.Numeric]) -> type[sa.Numeric]:  # type: ignore[type-arg]
    """asyncpg's ``base`` sending a float as the Decimal the server casts a float8 to (its 15
    significant digits), as psycopg's float8 is: asyncpg sent the float's binary value, so 1.005
    was stored 1.00 in a NUMERIC(6, 2) by a Core write where psycopg stored 1.01.

    Args:
        base: asyncpg's NUMERIC type.

    Returns:
        The type to bind NUMERIC columns with.
    """

    class FloatAsCast(base):  # type: ignore[valid-type,misc]
        def bind_processor(self, dialect: Dialect) -> Any:
            process = super().bind_processor(dialect)
            if process is None:
                return float_as_numeric
            return lambda value: process(float_as_numeric(value))

    return FloatAsCast
