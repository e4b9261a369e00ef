"""Checks on what repository writes name, and the native upsert statement. No I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.schema import ColumnDefault

from dalkit.errors import ConfigurationError, InvalidQueryError
from dalkit.query.context_defaults import context_default
from dalkit.query.fields import CoercionError, FieldInfo, ModelInfo
from dalkit.query.inputs import coerce_values
from dalkit.repository.versions import version_counter

__all__ = [
    "check_on",
    "check_rows",
    "check_update",
    "check_upsert",
    "check_values",
    "conflict_context_values",
    "Upsert",
    "unique_sets",
    "upsert_statement",
]


def check_values(info: ModelInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` if every key is a mapped, non-key field; primary keys are not rewritten."""
    pk = {f.name for f in info.primary_key}
    allowed = [n for n in info.fields if n not in pk]
    for name in values:
        if name not in allowed:
            raise InvalidQueryError(
                f"{info.name} has no updatable field {str(name)[:60]!r}",
                name=str(name),
                allowed=allowed,
            )
    return coerce_values(info, values)


def check_rows(
    info: ModelInfo, rows: Iterable[Mapping[str, Any]]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Rows of ``update_many`` as (primary key, values to set)."""
    pk_names = [f.name for f in info.primary_key]
    checked = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping) or any(name not in row for name in pk_names):
            raise InvalidQueryError(
                f"row {index} lacks the primary key ({', '.join(pk_names)})",
                name=str(index),
                allowed=pk_names,
            )
        try:
            key = info.ident_tuple({n: row[n] for n in pk_names})
        except CoercionError as exc:
            raise InvalidQueryError(f"row {index}: {exc}", name=str(index)) from None
        values = check_values(info, {k: v for k, v in row.items() if k not in pk_names})
        checked.append((key, values))
    return checked


def unique_sets(info: ModelInfo) -> list[frozenset[str]]:
    """The field sets the table declares unique: primary key, unique constraints, unique
    indexes on plain columns without a WHERE clause."""
    by_column = {id(f.column): f.name for f in info.fields.values()}
    sets = [frozenset(f.name for f in info.primary_key)]
    candidates: list[Sequence[Any]] = [
        list(c.columns) for c in info.table.constraints if isinstance(c, sa.UniqueConstraint)
    ]
    for index in info.table.indexes:
        partial = any(v for k, v in index.dialect_kwargs.items() if k.endswith("_where"))
        if index.unique and not partial and len(index.expressions) == len(index.columns):
            candidates.append(list(index.columns))
    for columns in candidates:
        names = [by_column.get(id(c)) for c in columns]
        if names and None not in names:
            sets.append(frozenset(n for n in names if n is not None))
    return sets


def check_on(info: ModelInfo, on: Sequence[str]) -> tuple[FieldInfo, ...]:
    """The conflict target of an upsert: fields that the table declares unique together."""
    if isinstance(on, str):
        raise InvalidQueryError("on must be a list of field names", name=on)
    names = list(on)
    sets = unique_sets(info)
    if frozenset(names) not in sets or len(set(names)) != len(names):
        raise InvalidQueryError(
            f"upsert on ({', '.join(map(str, names))}) needs a primary key, unique constraint or "
            f"unique index on exactly those fields",
            name=",".join(map(str, names)),
            allowed=[",".join(sorted(s)) for s in sets],
        )
    return tuple(info.fields[n] for n in names)


def check_update(
    info: ModelInfo, keys: Sequence[str], index: tuple[FieldInfo, ...], update: Sequence[str] | None
) -> list[str]:
    """The fields an upsert sets on conflict: ``update``, checked, or by default every given
    field outside the conflict target and the primary key."""
    index_names = {f.name for f in index}
    pk_names = {f.name for f in info.primary_key}
    if update is None:
        return [k for k in keys if k not in index_names and k not in pk_names]
    if isinstance(update, str):
        raise InvalidQueryError("update must be a list of field names", name=update)
    bad = [n for n in update if n not in keys or n in index_names]
    if bad:
        raise InvalidQueryError(
            f"update names {str(bad[0])[:60]!r}, which is not a given, non-conflict field",
            name=str(bad[0]),
            allowed=[k for k in keys if k not in index_names],
        )
    return list(update)


@dataclasses.dataclass(frozen=True)
class Upsert:
    """A checked upsert: its conflict target, and the fields it sets on conflict (none: the
    clashing row is kept as it is)."""

    index: tuple[FieldInfo, ...]
    names: tuple[str, ...]


def check_upsert(
    info: ModelInfo,
    rows: list[dict[str, Any]],
    on: Sequence[str],
    update: Sequence[str] | None,
) -> Upsert:
    """The upsert of ``rows``, which must all name the same known fields, the conflict fields
    among them."""
    index = check_on(info, on)
    keys = list(rows[0]) if rows else [f.name for f in index]
    for position, row in enumerate(rows):
        if list(row) != keys and set(row) != set(keys):
            raise InvalidQueryError(
                f"row {position} has other fields than row 0", name=str(position), allowed=keys
            )
    unknown = [k for k in keys if k not in info.fields]
    if unknown:
        raise InvalidQueryError(
            f"{info.name} has no field {unknown[0]!r:.60}",
            name=unknown[0],
            allowed=list(info.fields),
        )
    missing = [f.name for f in index if f.name not in keys]
    if missing:
        raise InvalidQueryError(
            f"upsert values lack the conflict field(s) {', '.join(missing)}",
            name=",".join(missing),
            allowed=keys,
        )
    for row in rows:  # in place: the callers write these very dicts
        row.update(coerce_values(info, row))
    # a version counter given is a new row's: the row met gets one more than its own
    counter = version_counter(info)
    names = check_update(info, keys, index, update)
    names = [n for n in names if counter is None or n != counter.name]
    upsert = Upsert(index, tuple(names))
    if upsert.names:
        _check_distinct_targets(rows, index)
    return upsert


def _check_distinct_targets(rows: list[dict[str, Any]], index: tuple[FieldInfo, ...]) -> None:
    """Refuses two rows with the same (coerced) conflict values, naming the later: ON CONFLICT
    DO UPDATE cannot touch one row twice, which PostgreSQL refuses with a bare error where
    SQLite and memory applied both (the last won). A NULL in the target matches nothing, so
    such rows never clash; with nothing to update, the later row is skipped everywhere."""
    names = [f.name for f in index]
    first: dict[tuple[Any, ...], int] = {}
    for position, row in enumerate(rows):
        target = tuple(row[n] for n in names)
        if None in target:
            continue
        try:
            earlier = first.setdefault(target, position)
        except TypeError:  # a value that cannot be compared so: left to the database
            continue
        if earlier != position:
            raise InvalidQueryError(
                f"row {position} has the {', '.join(names)} of row {earlier}: an upsert "
                f"updates each row once",
                name=str(position),
                allowed=names,
            )


def upsert_statement(
    info: ModelInfo,
    rows: list[dict[str, Any]],
    upsert: Upsert,
    dialect: str,
    *,
    orm: bool,
) -> Any:
    """``INSERT ... ON CONFLICT (index) DO UPDATE names | DO NOTHING`` for ``rows``, checked by
    `check_upsert()`."""
    if dialect == "postgresql":
        insert: Any = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:
        raise ConfigurationError(f"upsert supports PostgreSQL and SQLite, not {dialect}")
    pk_names = {f.name for f in info.primary_key}
    counter = version_counter(info)  # a new row's is 1, as the flush gives it
    if counter is not None and counter.name not in rows[0]:
        rows = [{**row, counter.name: 1} for row in rows]
    if orm:
        # one row as a row, not a list of one: SQLAlchemy's ORM INSERT of a list misnames the
        # parameters a default of the statement's context reads (KeyError 'table.col_m0')
        statement = insert(info.model).values(rows[0] if len(rows) == 1 else rows)
    else:
        # Core: a multi-row statement whose rowcount every driver reports
        columns = {name: info.fields[name].column.key for name in rows[0]}
        statement = insert(info.table).values([{columns[k]: v for k, v in r.items()} for r in rows])
    index, set_names = upsert.index, upsert.names
    targets = [f.column for f in index]
    if not set_names:
        return statement.on_conflict_do_nothing(index_elements=targets)
    excluded = statement.excluded
    of_context = conflict_context_values(info, upsert)
    set_: dict[Any, Any] = {
        info.fields[n].column: excluded[info.fields[n].column.key] for n in set_names
    }
    for field in info.fields.values():
        # ON CONFLICT DO UPDATE skips Python-side onupdate hooks unless they are named here
        onupdate = field.column.onupdate
        if (
            field.name in set_names
            or field.name in pk_names
            or not isinstance(onupdate, ColumnDefault)
        ):
            continue
        if field.name in of_context:
            set_[field.column] = of_context[field.name]
        elif onupdate.is_callable:
            set_[field.column] = onupdate.arg(None)
        elif onupdate.is_scalar or onupdate.is_clause_element:
            set_[field.column] = onupdate.arg
    if counter is not None:  # one more than the row's, as the flush's UPDATE sets it
        set_[counter.column] = counter.column + 1
    return statement.on_conflict_do_update(index_elements=targets, set_=set_)


def conflict_context_values(info: ModelInfo, upsert: Upsert) -> dict[str, Any]:
    """What an upsert's DO UPDATE sets for the fields it leaves out whose onupdate is a function
    of the statement's context: each called once, with no row's values, since one SET serves
    every row (ConfigurationError if it reads them).

    Args:
        info: The model's fields.
        upsert: The checked upsert.

    Returns:
        The values by field name.
    """
    keys = {f.name for f in info.primary_key}
    found: dict[str, Any] = {}
    for field in info.fields.values():
        of_row = context_default(field.column, update=True)
        if of_row is not None and field.name not in upsert.names and field.name not in keys:
            found[field.name] = of_row(None)
    return found
