"""Sort orders from user input (``"-created_at,id"``), checked against an allow-list, as ORDER BY
clauses or a Python sort. No I/O.

NULLs sort as the smallest value on every backend (first ascending, last descending), which is
SQLite's rule; PostgreSQL is told so explicitly. A float NaN sorts above every number, as on
PostgreSQL (SQLite stores no NaN: it becomes NULL there).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import sqlalchemy as sa

from dalkit.engine.fixed_chars import char_length, compared, unpadded
from dalkit.errors import ConfigurationError, InvalidSortError
from dalkit.query.fields import FieldInfo

__all__ = [
    "SortInput",
    "SortKey",
    "order_by_clauses",
    "parse_sort",
    "sort_entities",
    "sort_value",
]

T = TypeVar("T")
#: ``"-created_at,id"``, ``["-created_at", "id"]`` or ``[("created_at", "desc"), ("id", "asc")]``
SortInput: TypeAlias = "str | Sequence[str | tuple[str, str]]"

_TOKEN = re.compile(r"([+-]?)([A-Za-z_][A-Za-z0-9_]*)")
_DIRECTIONS = {"asc": False, "desc": True}
MAX_SORT_KEYS = 16
MAX_SORT_LENGTH = 1000


@dataclasses.dataclass(frozen=True, eq=False)
class SortKey:
    """One field of a sort order and its direction."""

    field: FieldInfo
    descending: bool = False

    @property
    def token(self) -> str:
        return ("-" if self.descending else "") + self.field.name

    def clause(self) -> sa.ColumnElement[Any]:
        column = compared(self.field.column)
        ordered = column.desc() if self.descending else column.asc()
        if self.field.nullable:
            ordered = ordered.nulls_last() if self.descending else ordered.nulls_first()
        return ordered


def parse_sort(
    sort: SortInput | None, allowed: Mapping[str, FieldInfo], *, owner: str | None = None
) -> tuple[SortKey, ...]:
    """The sort keys named by ``sort``; any unknown field, bad direction or repeat raises
    InvalidSortError, the 400 of a caller's input, or ConfigurationError when ``sort`` is the
    ``default_sort`` of the repository class ``owner``: its own mistake."""
    if owner is None:
        return _parse_sort(sort, allowed)
    try:
        return _parse_sort(sort, allowed)
    except InvalidSortError as exc:
        raise ConfigurationError(f"{owner}.default_sort: {exc}") from None


def _parse_sort(sort: SortInput | None, allowed: Mapping[str, FieldInfo]) -> tuple[SortKey, ...]:
    if sort is None:
        return ()
    if isinstance(sort, str):
        if len(sort) > MAX_SORT_LENGTH:
            raise InvalidSortError(
                "sort order is too long", name=sort[:80], allowed=_tokens(allowed)
            )
        parts: Sequence[str | tuple[str, str]] = sort.split(",") if sort.strip() else []
    elif isinstance(sort, Sequence):
        parts = sort
    else:
        raise InvalidSortError(
            f"sort must be a string or a list, got {type(sort).__name__}",
            name=repr(sort)[:80],
            allowed=_tokens(allowed),
        )
    if len(parts) > MAX_SORT_KEYS:
        raise InvalidSortError(
            f"at most {MAX_SORT_KEYS} sort fields", name=str(sort)[:80], allowed=_tokens(allowed)
        )
    keys: list[SortKey] = []
    for part in parts:
        key = _parse_part(part, allowed)
        if any(k.field is key.field for k in keys):
            raise InvalidSortError(
                f"{key.field.name} appears twice in the sort order",
                name=key.field.name,
                allowed=_tokens(allowed),
            )
        keys.append(key)
    return tuple(keys)


def _parse_part(part: object, allowed: Mapping[str, FieldInfo]) -> SortKey:
    if isinstance(part, tuple) and len(part) == 2:
        name, direction = part
        if not isinstance(direction, str) or direction.lower() not in _DIRECTIONS:
            raise InvalidSortError(
                f"unknown sort direction {str(direction)[:40]!r}; use asc or desc",
                name=str(direction)[:200],
                allowed=tuple(_DIRECTIONS),
            )
        field = allowed.get(name) if isinstance(name, str) else None
        if field is None:
            raise _unknown(str(name), allowed)
        return SortKey(field, _DIRECTIONS[direction.lower()])
    if not isinstance(part, str):
        raise InvalidSortError(
            f"sort fields must be strings, got {type(part).__name__}",
            name=repr(part)[:80],
            allowed=_tokens(allowed),
        )
    match = _TOKEN.fullmatch(part.strip())
    if match is None or match.group(2) not in allowed:
        raise _unknown(part, allowed)
    return SortKey(allowed[match.group(2)], match.group(1) == "-")


def _unknown(name: str, allowed: Mapping[str, FieldInfo]) -> InvalidSortError:
    shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
    return InvalidSortError(
        f"unknown or disallowed sort field {shown}", name=name, allowed=_tokens(allowed)
    )


def _tokens(allowed: Mapping[str, FieldInfo]) -> tuple[str, ...]:
    return tuple(sorted(allowed))


def with_tiebreaker(
    keys: Sequence[SortKey], primary_key: Iterable[FieldInfo]
) -> tuple[SortKey, ...]:
    """``keys`` followed by the primary key fields they lack, so that the order is total."""
    present = {id(k.field) for k in keys}
    extra = [SortKey(f) for f in primary_key if id(f) not in present]
    return (*keys, *extra)


def order_by_clauses(keys: Iterable[SortKey]) -> list[sa.ColumnElement[Any]]:
    return [key.clause() for key in keys]


def sort_entities(entities: Iterable[T], keys: Sequence[SortKey]) -> list[T]:
    """``entities`` in the order the databases would return them for ``keys``."""
    ordered = list(entities)
    # stable sorts applied from the last key to the first give the lexicographic order
    for key in reversed(keys):
        name, length = key.field.name, char_length(key.field.column.type)
        ordered.sort(
            key=lambda e, n=name, c=length: sort_value(unpadded(getattr(e, n), c)),  # type: ignore[misc]
            reverse=key.descending,
        )
    return ordered


def sort_value(value: Any) -> tuple[bool, bool, Any]:
    """``value``'s place in the databases' order: NULL below everything, and NaN (a float or
    a Decimal) above every number and equal to itself, as PostgreSQL orders it; Python's
    comparisons give NaN no place at all (and refuse it for a Decimal)."""
    if value is None:
        return (False, False, None)
    if value != value:  # only NaN differs from itself
        return (True, True, 0)
    return (True, False, value)
