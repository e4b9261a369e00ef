"""What user input may reach: a repository's allow-lists, which leave sensitive columns out
unless listed, and values to write, checked and coerced as filter values are. No I/O."""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import DOMAIN

from dalkit.engine.fixed_chars import char_length, padded
from dalkit.engine.numbers import numeric_typmod, stored_numeric
from dalkit.engine.single_floats import is_single, real_as_stored
from dalkit.errors import ConfigurationError, InvalidQueryError
from dalkit.query.fields import CoercionError, FieldInfo, ModelInfo, column_field, to_decimal

__all__ = [
    "as_held",
    "coerce_values",
    "key_refusal",
    "numeric_float",
    "refusal",
    "resolve_allowed",
    "secret_key",
    "write_value",
]


def resolve_allowed(
    owner: str,
    attribute: str,
    configured: Collection[str] | None,
    info: ModelInfo,
    usable: Collection[str],
) -> list[str]:
    """The names a repository's ``filterable``/``sortable``/``searchable`` allows: ``configured``
    when given (each must be in ``usable``), else every usable field that is not sensitive.
    ``owner`` names the repository class in the ConfigurationError."""
    if configured is None:
        return [n for n in usable if not info.fields[n].sensitive]
    if isinstance(configured, str):
        raise ConfigurationError(f"{owner}.{attribute} must be a list of names")
    names = list(configured)
    wrong = [n for n in names if n not in usable]
    if wrong:
        raise ConfigurationError(
            f"{owner}.{attribute} names {', '.join(map(repr, wrong))}, which "
            f"{info.name} has no usable column for; choose from {', '.join(usable)}"
        )
    return names


def refusal(label: str, field: FieldInfo, reason: object) -> str:
    """What an error refusing a value for ``field`` says: ``label: reason``, or, for a sensitive
    field (a secret's: the reason may quote the value), its column's kind and no value.

    Args:
        label: What the message starts with: the field's name, a filter's key.
        field: The field the value was given for.
        reason: Why the value was refused (a CoercionError, or its text).

    Returns:
        The message.
    """
    if field.sensitive:
        return f"{label}: not a value for its {field.kind} column (a sensitive field's: not shown)"
    return f"{label}: {reason}"


def secret_key(info: ModelInfo) -> bool:
    """Whether a column of ``info``'s primary key is sensitive (a reset token kept as the key):
    its values are never shown, in a not-found error or a refusal.

    Args:
        info: The model.

    Returns:
        True when a key's value is a secret's.
    """
    return any(field.sensitive for field in info.primary_key)


def key_refusal(info: ModelInfo, ident: Any, reason: object) -> str:
    """What an error refusing ``ident`` as ``info``'s primary key says: the value (its start)
    and why, or, for a sensitive key (`secret_key`), neither.

    Args:
        info: The model.
        ident: The primary key given.
        reason: Why it was refused (a CoercionError, or its text).

    Returns:
        The message.
    """
    if secret_key(info):
        return "bad primary key (a sensitive field's: not shown)"
    return f"bad primary key {ident!r:.60}: {reason}"


def coerce_values(info: ModelInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    """Values to write (upsert, insert) checked and coerced as filter values are: ``"30"``
    becomes 30 in an INTEGER column and ``"thirty"`` raises InvalidQueryError naming the field.
    None passes (the database enforces NOT NULL); columns of other types pass unchanged."""
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        field = info.fields.get(name) if isinstance(name, str) else None
        if field is None:
            raise InvalidQueryError(
                f"{info.name} has no field {str(name)[:60]!r}",
                name=str(name),
                allowed=list(info.fields),
            )
        coerced[name] = write_value(field, value)
    return coerced


def write_value(field: FieldInfo, value: Any) -> Any:
    """``value`` checked and coerced for ``field`` as a write stores it (see `coerce_values`).

    Args:
        field: The field written.
        value: The value given.

    Returns:
        The value to store.
    """
    if value is None:
        return value
    if field.kind == "other":
        if isinstance(field.column.type, sa.LargeBinary):
            return _to_bytes(field, value)
        base = _domain_base(field.column.type, field.name)
        return value if base is None else write_value(base, value)
    if field.kind == "decimal":
        return _stored_decimal(field, value)
    if numeric_float(field):  # stored as any NUMERIC is, read back as a float
        stored = _stored_decimal(field, value)
        return float(stored) if isinstance(stored, decimal.Decimal) else stored
    if field.kind == "float" and _not_finite(value):
        return value  # stored as given; dalkit's SQLite engines refuse nan (it would be NULL)
    try:
        result = field.coerce(value)
    except CoercionError as exc:
        raise InvalidQueryError(refusal(field.name, field, exc), name=field.name) from None
    length = getattr(field.column.type, "length", None)
    if isinstance(result, str) and isinstance(length, int) and len(result) > length:
        # PostgreSQL refuses it and SQLite stores it whole: refused here on both
        raise InvalidQueryError(
            f"{field.name}: {len(result)} characters do not fit in {length}", name=field.name
        )
    return result


def numeric_float(field: FieldInfo) -> bool:
    """Whether ``field`` is a NUMERIC read back as a float (``asdecimal=False``), whose numbers
    are stored rounded to its scale as any NUMERIC's are.

    Args:
        field: The field.

    Returns:
        True for such a NUMERIC; False for a FLOAT, REAL or DOUBLE and any other column.
    """
    type_ = field.column.type
    return field.kind == "float" and not isinstance(type_, sa.Float)


def _stored_decimal(field: FieldInfo, value: Any) -> Any:
    """``value`` as PostgreSQL stores it in ``field``'s NUMERIC column (`stored_numeric`):
    rounded half away from zero to the scale (1.005 is 1.01 in a NUMERIC(6, 2)), a float through
    its 15 significant digits; InvalidQueryError for what the server refuses ("numeric field
    overflow": more integer digits than the precision leaves, an infinity in a column with a
    precision)."""
    precision, scale = numeric_typmod(field.column.type)
    not_finite = _not_finite(value)
    if not_finite and (precision is None or decimal.Decimal(value).is_nan()):
        return value  # a NaN is stored (dalkit's SQLite engines refuse it: NULL)
    try:
        return stored_numeric(value if not_finite else to_decimal(value), precision, scale)
    except CoercionError as exc:
        raise InvalidQueryError(refusal(field.name, field, exc), name=field.name) from None
    except ValueError:
        reason = f"{value!r:.60} has more digits than the column holds"
        raise InvalidQueryError(refusal(field.name, field, reason), name=field.name) from None


def _to_bytes(field: FieldInfo, value: Any) -> bytes:
    # psycopg raised a raw TypeError for text, and the in-memory repository stored it
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidQueryError(
        f"{field.name}: expected bytes, got {type(value).__name__}", name=field.name
    )


def _not_finite(value: Any) -> bool:
    if isinstance(value, decimal.Decimal):
        return not value.is_finite()
    return isinstance(value, float) and not math.isfinite(value)


@functools.cache
def _domain_base(type_: Any, name: str) -> FieldInfo | None:
    """A field of the base type of a PostgreSQL domain, whose values the domain holds."""
    if not isinstance(type_, DOMAIN):
        return None
    return column_field(sa.Column(name, type_.data_type))


def as_held(field: FieldInfo, value: Any) -> Any:
    """``value`` as ``field``'s column holds it on PostgreSQL, for the in-memory repository to
    keep and for filters to compare with: a ``CHAR(n)``'s text padded to ``n``
    (`dalkit.engine.fixed_chars`), a ``real``'s number rounded to 4 bytes
    (`dalkit.engine.single_floats`); any other as it is.

    Args:
        field: The column's field.
        value: A value of the field's type.

    Returns:
        The value held.

    Raises:
        CoercionError: A number past a ``real``'s range, which PostgreSQL refuses.
    """
    type_ = field.column.type
    if field.kind == "str":
        return padded(value, char_length(type_))
    if field.kind == "float" and is_single(type_):
        try:
            return real_as_stored(value)
        except ValueError as exc:
            raise CoercionError(str(exc)) from None
    return value


def held_ident(info: ModelInfo, ident: Any) -> tuple[Any, ...]:
    """A primary key given as a scalar, tuple or mapping, coerced, as the columns hold it
    (`as_held`): a ``CHAR(n)`` key given unpadded finds its row, as on PostgreSQL.

    Args:
        info: The model's fields.
        ident: The key, as `ModelInfo.ident_tuple` takes it.

    Returns:
        The key's values.

    Raises:
        CoercionError: A value of the wrong type.
    """
    values = info.ident_tuple(ident)
    if not _holds_keys(info):
        return values
    return tuple(as_held(f, v) for f, v in zip(info.primary_key, values, strict=True))


@functools.cache
def _holds_keys(info: ModelInfo) -> bool:
    """Whether `as_held` may change a value of ``info``'s primary key (once per model: a get
    of any other key pays nothing)."""
    return any(
        char_length(f.column.type) is not None or (f.kind == "float" and is_single(f.column.type))
        for f in info.primary_key
    )
