"""The name lookups behind QueryBuilder: the allow-lists of operators, aggregates and dialects,
and the resolution of column references and join targets against the metadata. No I/O."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapper

from dalkit.engine.fixed_chars import compared
from dalkit.errors import InvalidQueryError
from dalkit.query.fields import CoercionError, FieldInfo, column_field
from dalkit.query.joins import relationship_onclause
from dalkit.query.specs import coerce_condition, operators_for

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_REFERENCE = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,62})")
AGGREGATE = re.compile(r"(count|sum|avg|min|max)\((\*|[A-Za-z_][A-Za-z0-9_.]{0,126})\)")
OPERATORS = {
    "=": "eq",
    "==": "eq",
    "!=": "ne",
    "<>": "ne",
    "<": "lt",
    "<=": "lte",
    ">": "gt",
    ">=": "gte",
    "in": "in",
    "not in": "not_in",
    "like": "like",
    "ilike": "ilike",
    "contains": "contains",
    "startswith": "startswith",
    "between": "between",
    "is null": "isnull",
    "is not null": "isnull",
}
OPERATORS.update({op: op for op in set(OPERATORS.values()) | {"not_in"}})
AGGREGATE_KINDS = {
    "count": None,
    "sum": {"int", "float", "decimal"},
    "avg": {"int", "float", "decimal"},
    "min": {"int", "float", "decimal", "str", "datetime", "date", "time"},
    "max": {"int", "float", "decimal", "str", "datetime", "date", "time"},
}
DIALECTS = {"postgresql": postgresql.dialect, "sqlite": sqlite.dialect}
MAX_LIMIT = 2**53


@dataclasses.dataclass(frozen=True)
class Joined:
    """One join of a QueryBuilder."""

    name: str  # how columns refer to it: "posts" in "posts.title"
    table: sa.FromClause  # the table, or an alias of it named ``name`` when already in FROM
    mapper: Mapper[Any] | None
    outer: bool
    onclause: Any


# a QueryBuilder's FROM: the root under None, each join under its name
Tables = dict[str | None, tuple[sa.FromClause, Mapper[Any] | None]]


def field_of(tables: Tables, reference: object) -> FieldInfo:
    """The column ``reference`` (``name`` or ``joined.name``) names among ``tables``."""
    match = _REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is not None and match.group(1) in tables:
        table, mapper = tables[match.group(1)]
        column = _column(table, mapper, match.group(2))
        if column is not None:
            return column_field(column, reference)  # type: ignore[arg-type]
    allowed = [
        f"{prefix + '.' if prefix else ''}{name}"
        for prefix, (table, mapper) in tables.items()
        for name in _column_names(table, mapper)
    ]
    raise InvalidQueryError(
        f"unknown column {str(reference)[:60]!r}", name=str(reference), allowed=allowed
    )


def aggregate_of(tables: Tables, text: object) -> tuple[sa.ColumnElement[Any], FieldInfo | None]:
    """A column or an allowed aggregate of one, and the field describing its values."""
    match = AGGREGATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        field = field_of(tables, text)
        # a CHAR(n) sorted as PostgreSQL sorts it, without its padding (COLLATE RTRIM on SQLite)
        return compared(field.column), None
    function, argument = match.groups()
    if argument == "*":
        if function != "count":
            raise InvalidQueryError(f"{function}(*) is not allowed", name=str(text))
        return sa.func.count(), column_field(sa.Column("count", sa.BigInteger))
    field = field_of(tables, argument)
    kinds = AGGREGATE_KINDS[function]
    if kinds is not None and field.kind not in kinds:
        raise InvalidQueryError(
            f"{function}() does not apply to {argument} ({field.kind})",
            name=str(text),
            allowed=[f for f, k in AGGREGATE_KINDS.items() if k is None or field.kind in k],
        )
    if function in ("min", "max"):
        # of a CHAR(n), the least and greatest as PostgreSQL compares them, without their
        # padding; the result compared (HAVING) and sorted the same way (SQLite compared the
        # padded texts: 'a\t   ' below 'a    ', where PostgreSQL has 'a' below 'a\t')
        return compared(getattr(sa.func, function)(compared(field.column))), field
    expression = getattr(sa.func, function)(field.column)
    if function == "count":
        return expression, column_field(sa.Column("count", sa.BigInteger))
    if function == "avg":
        return expression, column_field(sa.Column("avg", sa.Float))
    return expression, field


def condition_of(field: FieldInfo, op: object, value: Any, where: str) -> Any:
    """The bound condition ``field op value``; ``where`` names it in errors."""
    name = OPERATORS.get(op.lower().strip()) if isinstance(op, str) else None
    if name is None:
        raise InvalidQueryError(
            f"unknown operator {str(op)[:40]!r}", name=str(op), allowed=sorted(OPERATORS)
        )
    if name not in (allowed := operators_for(field)):
        # as the repositories' filters: a text operator on a number raised a raw TypeError, an
        # order on a boolean SQLAlchemy's ArgumentError, and an enum's order differs by database
        raise InvalidQueryError(
            f"operator {op!r} does not apply to {where[:60]} ({field.kind})",
            name=str(op),
            allowed=allowed,
        )
    if isinstance(op, str) and op.lower().strip() in ("is null", "is not null"):
        value = op.lower().strip() == "is null"
    try:
        return coerce_condition(field, name, value)
    except CoercionError as exc:
        raise InvalidQueryError(f"{where[:60]} {op}: {exc}", name=str(where)) from None


def join_of(source: Any, tables: Tables, target: object, *, outer: bool) -> Joined:
    """How ``target`` (a relationship or a table) joins one of ``tables``."""
    if not isinstance(target, str) or not _NAME.fullmatch(target):
        raise InvalidQueryError(f"bad join target {str(target)[:60]!r}", name=str(target))
    if target in tables:
        raise InvalidQueryError(f"{target!r} is joined already", name=target)
    for source, mapper in tables.values():
        if mapper is not None and target in mapper.relationships:
            relationship = mapper.relationships[target]
            if relationship.secondary is not None:
                raise InvalidQueryError(
                    f"{target!r} goes through an association table; join the tables",
                    name=target,
                )
            other = relationship.mapper
            table = other.local_table
            if not isinstance(table, sa.Table):
                raise InvalidQueryError(f"{target!r} is not mapped to a table", name=target)
            joined_table = _fresh(tables, table, target)
            onclause = relationship_onclause(relationship, source, joined_table)
            return Joined(target, joined_table, other, outer, onclause)
    root = root_table(source)
    assert root is not None
    other_table = root.metadata.tables.get(target)
    if other_table is not None:
        joined_table = _fresh(tables, other_table, target)
        for table, _ in tables.values():
            try:
                foreign_key_join = sa.join(table, joined_table).onclause
            except (sa.exc.NoForeignKeysError, sa.exc.AmbiguousForeignKeysError):
                continue
            return Joined(target, joined_table, None, outer, foreign_key_join)
    allowed = sorted(
        {r for _, m in tables.values() if m is not None for r, _ in m.relationships.items()}
        | {t for t in root.metadata.tables if t not in tables}
    )
    raise InvalidQueryError(
        f"cannot join {target!r}: no relationship or foreign key leads there",
        name=target,
        allowed=allowed,
    )


def _fresh(tables: Tables, table: sa.Table, name: str) -> sa.FromClause:
    """``table``, or an alias named ``name`` when the FROM holds it already (a
    self-referential or second join), so that ``name.column`` means the joined rows."""
    present = any(_base(t) is table for t, _ in tables.values())
    return table.alias(name) if present else table


def _base(selectable: sa.FromClause) -> sa.FromClause:
    return selectable.element if isinstance(selectable, sa.Alias) else selectable


def root_table(source: Any) -> sa.Table | None:
    """The table a QueryBuilder source (a mapped class or a Table) selects from, if any."""
    if isinstance(source, sa.Table):
        return source
    mapper = mapper_of(source)
    table = mapper.local_table if mapper is not None else None
    return table if isinstance(table, sa.Table) else None


def mapper_of(source: Any) -> Mapper[Any] | None:
    """The mapper of a mapped class; None for a Table or anything else."""
    if not isinstance(source, type):
        return None
    try:
        mapper: Any = sa.inspect(source)
    except sa.exc.NoInspectionAvailable:
        return None
    return mapper if isinstance(mapper, Mapper) else None


def _column(table: sa.FromClause, mapper: Mapper[Any] | None, name: str) -> sa.Column[Any] | None:
    if mapper is not None:
        prop = mapper.column_attrs.get(name)
        column = prop.columns[0] if prop is not None else None
        if not isinstance(column, sa.Column) or column.table is not _base(table):
            return None
        found = table.corresponding_column(column)
        return found if isinstance(found, sa.Column) else None
    found = table.columns.get(name)
    return found if isinstance(found, sa.Column) else None


def _column_names(table: sa.FromClause, mapper: Mapper[Any] | None) -> list[str]:
    if mapper is not None:
        return [p.key for p in mapper.column_attrs]
    return [c.name for c in table.columns]


def label_of(text: str) -> str:
    """A result-column label for a selected expression."""
    return re.sub(r"\W+", "_", text).strip("_") or "value"


def count_of(value: object, name: str) -> int:
    """``value`` checked as a LIMIT or OFFSET (``name``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise InvalidQueryError(
            f"{name} must be an integer from 0 to {MAX_LIMIT}, got {str(value)[:40]!r}",
            name=name,
            allowed=(f"0..{MAX_LIMIT}",),
        )
    return value
