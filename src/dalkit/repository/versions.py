"""A model's version counter (SQLAlchemy's ``version_id_col``) in the writes that bypass the
unit of work: `bulk_update` and `upsert` / `upsert_many`. No I/O.

The flush adds one to the counter of each row it updates and checks the one it read, so a
session still holding the old version fails (``StaleDataError``) rather than overwrite the
change. ``bulk_update`` left the counter as it was, so such a session overwrote the rows it had
changed, silently; ``upsert`` wrote the counter given (or none, and a new row broke its NOT
NULL). They add one to it now, and an upsert inserts a new row at the counter's first value. A
counter the server sets (``version_id_generator=False``) is left to the server; one a Python
function computes (a UUID) cannot be computed in the statement, and these writes refuse it.
The in-memory repository keeps the counter as the flush does (`flushed_version`): its ``add``
refused a versioned model's entity (NotNullViolationError) and its writes left the counter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from dalkit.errors import InvalidQueryError
from dalkit.query.fields import FieldInfo, ModelInfo

__all__ = ["bump_sets", "flushed_version", "version_counter"]


def version_counter(info: ModelInfo) -> FieldInfo | None:
    """The field of ``info``'s version counter that a bulk write must add one to.

    Args:
        info: The model's fields.

    Returns:
        The counter's field, or None for a model without one or whose server sets it.

    Raises:
        InvalidQueryError: The counter's values come from a Python function other than
            SQLAlchemy's own one-more.
    """
    mapper = sa.inspect(info.model)
    column, generate = mapper.version_id_col, mapper.version_id_generator
    if column is None or generate is False:
        return None
    field = info.field_for_column(column)
    if field is None:
        return None
    try:
        adds_one = generate(None) == 1 and generate(41) == 42
    except Exception:  # a generator of other values (a UUID's) may refuse an int
        adds_one = False
    if not adds_one:
        raise InvalidQueryError(
            f"{info.name}'s version counter comes from a Python function, which a bulk write "
            "or an upsert cannot run for each row: use update()",
            name=field.name,
        )
    return field


def bump_sets(
    info: ModelInfo, fields: Iterable[FieldInfo], quote: Callable[[str], str], qualifier: str
) -> list[str]:
    """The SET clause adding one to ``info``'s version counter in a bulk update of ``fields``.

    Args:
        info: The model's fields.
        fields: The fields the update sets; a counter among them is set as given.
        quote: The dialect's identifier quoting.
        qualifier: What names the updated table in the statement (``"t."``), or ``""``.

    Returns:
        One clause, or none for a model without a counter dalkit keeps.
    """
    counter = version_counter(info)
    if counter is None or any(f is counter for f in fields):
        return []
    name = quote(counter.column.name)
    return [f"{name} = {qualifier}{name} + 1"]


def flushed_version(
    info: ModelInfo, entity: Any, values: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a flush writes to ``info``'s version counter, for the in-memory repository: a new
    entity's first value (unless it names one), or one more than an entity's current one when
    ``values`` change it (unless they name the counter).

    Args:
        info: The model's fields.
        entity: The entity inserted or updated.
        values: The values an update sets, or None for an insert.

    Returns:
        The counter's name and value, or nothing for a model without a counter the flush sets.
    """
    mapper = sa.inspect(info.model)
    column, generate = mapper.version_id_col, mapper.version_id_generator
    field = None if column is None or generate is False else info.field_for_column(column)
    if field is None or generate is False:
        return {}
    current = getattr(entity, field.name)
    if values is None:
        return {} if current is not None else {field.name: generate(None)}
    return {} if field.name in values else {field.name: generate(current)}
