"""QueryBuilder: SELECTs assembled from names that are checked against the metadata. No I/O.

Every identifier (table, relationship, column), operator, aggregate, direction and limit is
looked up in an allow-list; anything else raises InvalidQueryError. Values are always bound. The
builder is immutable: each method returns a new one.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper

from dalkit.errors import InvalidQueryError
from dalkit.query.fields import CoercionError, FieldInfo, column_field
from dalkit.query.joins import relationship_onclause
from dalkit.query.soft_delete import live_condition
from dalkit.query.specs import coerce_condition

__all__ = ["QueryBuilder"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_REFERENCE = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,62})")
_AGGREGATE = re.compile(r"(count|sum|avg|min|max)\((\*|[A-Za-z_][A-Za-z0-9_.]{0,126})\)")
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
_AGGREGATE_KINDS = {
    "count": None,
    "sum": {"int", "float", "decimal"},
    "avg": {"int", "float", "decimal"},
    "min": {"int", "float", "decimal", "str", "datetime", "date", "time"},
    "max": {"int", "float", "decimal", "str", "datetime", "date", "time"},
}
_DIALECTS = {"postgresql": postgresql.dialect, "sqlite": sqlite.dialect}
MAX_LIMIT = 2**53


@dataclasses.dataclass(frozen=True)
class _Joined:
    name: str  # how columns refer to it: "posts" in "posts.title"
    table: sa.FromClause  # the table, or an alias of it named ``name`` when already in FROM
    mapper: Mapper[Any] | None
    outer: bool
    onclause: Any


@dataclasses.dataclass(frozen=True)
class QueryBuilder:
    """``QueryBuilder(User).join("posts").select("name", "count(posts.id)").group_by("name")``.

    Attributes:
        source: A mapped class or a Table; joins follow the mapped class's relationships or,
            for tables, the foreign keys of the same MetaData.
        dialect: ``"postgresql"`` or ``"sqlite"``: gives ``like`` the repositories' meaning.
    """

    source: Any
    dialect: str | None = None
    _joins: tuple[_Joined, ...] = ()
    _columns: tuple[str, ...] = ()
    _where: tuple[Any, ...] = ()
    _group_by: tuple[str, ...] = ()
    _having: tuple[Any, ...] = ()
    _order_by: tuple[tuple[str, bool], ...] = ()
    _limit: int | None = None
    _offset: int | None = None

    def __post_init__(self) -> None:
        if self.dialect is not None and self.dialect not in _DIALECTS:
            raise InvalidQueryError(
                f"unknown dialect {str(self.dialect)[:40]!r}",
                name=str(self.dialect),
                allowed=list(_DIALECTS),
            )
        if _root(self.source) is None:
            raise InvalidQueryError(
                f"QueryBuilder needs a mapped class or a Table, got {type(self.source).__name__}",
                name=repr(self.source)[:80],
            )

    # --- building ---------------------------------------------------------------------------

    def select(self, *columns: str) -> QueryBuilder:
        """Add ``columns`` (``"name"``, ``"posts.title"``, ``"count(posts.id)"``) to select."""
        for column in columns:
            self._expression(column)
        return dataclasses.replace(self, _columns=self._columns + tuple(columns))

    def join(self, target: str) -> QueryBuilder:
        """Inner-join the relationship (or foreign-key-linked table) named ``target``."""
        return self._join(target, outer=False)

    def left_join(self, target: str) -> QueryBuilder:
        """`join()` as a LEFT OUTER JOIN: rows without a match are kept."""
        return self._join(target, outer=True)

    def where(self, column: str, op: str, value: Any = None) -> QueryBuilder:
        """AND ``column op value`` (``"age", ">=", 18``; ``value`` is always bound)."""
        field = self._field(column)
        condition = self._condition(field, op, value, column)
        return dataclasses.replace(
            self, _where=(*self._where, condition.to_sql(self.dialect or ""))
        )

    def group_by(self, *columns: str) -> QueryBuilder:
        """Group by ``columns``: each plain column selected next to an aggregate."""
        for column in columns:
            self._field(column)
        return dataclasses.replace(self, _group_by=self._group_by + tuple(columns))

    def having(self, aggregate: str, op: str, value: Any) -> QueryBuilder:
        """AND ``aggregate op value`` on the groups (``"count(posts.id)", ">", 5``)."""
        expression, field = self._aggregate(aggregate)
        if field is None:
            raise InvalidQueryError(f"{aggregate!r:.60} is not an aggregate", name=str(aggregate))
        condition = self._condition(field, op, value, aggregate)
        clause = condition.to_sql(self.dialect or "", target=expression)
        return dataclasses.replace(self, _having=(*self._having, clause))

    def order_by(self, column: str, direction: str = "asc") -> QueryBuilder:
        """Order by ``column`` (or an aggregate), ``"asc"`` or ``"desc"``, after earlier keys."""
        self._expression(column)
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise InvalidQueryError(
                f"unknown direction {str(direction)[:40]!r}",
                name=str(direction),
                allowed=("asc", "desc"),
            )
        return dataclasses.replace(
            self, _order_by=(*self._order_by, (column, direction.lower() == "desc"))
        )

    def limit(self, count: int) -> QueryBuilder:
        """Return at most ``count`` rows."""
        return dataclasses.replace(self, _limit=_count(count, "limit"))

    def offset(self, count: int) -> QueryBuilder:
        """Skip the first ``count`` rows."""
        return dataclasses.replace(self, _offset=_count(count, "offset"))

    def build(self) -> sa.Select[Any]:
        """The SELECT; plain columns next to aggregates must be grouped by."""
        root = _root(self.source)
        assert root is not None
        selected = self._columns or tuple(c.name for c in root.columns)
        expressions = [self._expression(c).label(_label(c)) for c in selected]
        has_aggregate = any(_AGGREGATE.fullmatch(c) for c in selected)
        if has_aggregate:
            ungrouped = [
                c for c in selected if not _AGGREGATE.fullmatch(c) and c not in self._group_by
            ]
            if ungrouped:
                raise InvalidQueryError(
                    f"{ungrouped[0]!r} is selected next to aggregates but not grouped by",
                    name=ungrouped[0],
                    allowed=self._group_by,
                )
        from_clause: Any = root
        for joined in self._joins:
            # soft-deleted rows are hidden in the ON clause, so outer joins keep their rows
            onclause = joined.onclause
            live_joined = live_condition(joined.table)
            if live_joined is not None:
                onclause = sa.and_(onclause, live_joined)
            from_clause = from_clause.join(joined.table, onclause, isouter=joined.outer)
        statement = sa.select(*expressions).select_from(from_clause)
        live = live_condition(root)  # hidden as the repositories hide them
        if live is not None:
            statement = statement.where(live)
        if self._where:
            statement = statement.where(*self._where)
        if self._group_by:
            statement = statement.group_by(*(self._field(c).column for c in self._group_by))
        if self._having:
            statement = statement.having(*self._having)
        for column, descending in self._order_by:
            expression = self._expression(column)
            statement = statement.order_by(expression.desc() if descending else expression.asc())
        if self._limit is not None:
            statement = statement.limit(self._limit)
        if self._offset is not None:
            statement = statement.offset(self._offset)
        return statement

    def to_sql(self, dialect: str | None = None) -> str:
        """The SQL for display, with ``:name``/``%(name)s`` placeholders where values go."""
        name = dialect or self.dialect or "postgresql"
        if name not in _DIALECTS:
            raise InvalidQueryError(
                f"unknown dialect {name[:40]!r}", name=name, allowed=list(_DIALECTS)
            )
        chosen: Dialect = _DIALECTS[name]()
        return str(self.build().compile(dialect=chosen))

    # --- lookups ----------------------------------------------------------------------------

    def _tables(self) -> dict[str | None, tuple[sa.FromClause, Mapper[Any] | None]]:
        root = _root(self.source)
        assert root is not None
        found: dict[str | None, tuple[sa.FromClause, Mapper[Any] | None]] = {
            None: (root, _mapper(self.source))
        }
        for joined in self._joins:
            found[joined.name] = (joined.table, joined.mapper)
        return found

    def _field(self, reference: object) -> FieldInfo:
        match = _REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
        tables = self._tables()
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

    def _aggregate(self, text: object) -> tuple[sa.ColumnElement[Any], FieldInfo | None]:
        match = _AGGREGATE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            field = self._field(text)
            return field.column, None
        function, argument = match.groups()
        if argument == "*":
            if function != "count":
                raise InvalidQueryError(f"{function}(*) is not allowed", name=str(text))
            return sa.func.count(), column_field(sa.Column("count", sa.BigInteger))
        field = self._field(argument)
        kinds = _AGGREGATE_KINDS[function]
        if kinds is not None and field.kind not in kinds:
            raise InvalidQueryError(
                f"{function}() does not apply to {argument} ({field.kind})",
                name=str(text),
                allowed=[f for f, k in _AGGREGATE_KINDS.items() if k is None or field.kind in k],
            )
        expression = getattr(sa.func, function)(field.column)
        if function == "count":
            return expression, column_field(sa.Column("count", sa.BigInteger))
        if function == "avg":
            return expression, column_field(sa.Column("avg", sa.Float))
        return expression, field

    def _expression(self, text: object) -> sa.ColumnElement[Any]:
        return self._aggregate(text)[0]

    def _condition(self, field: FieldInfo, op: object, value: Any, where: str) -> Any:
        name = OPERATORS.get(op.lower().strip()) if isinstance(op, str) else None
        if name is None:
            raise InvalidQueryError(
                f"unknown operator {str(op)[:40]!r}", name=str(op), allowed=sorted(OPERATORS)
            )
        if isinstance(op, str) and op.lower().strip() in ("is null", "is not null"):
            value = op.lower().strip() == "is null"
        try:
            return coerce_condition(field, name, value)
        except CoercionError as exc:
            raise InvalidQueryError(f"{where[:60]} {op}: {exc}", name=str(where)) from None

    def _join(self, target: object, *, outer: bool) -> QueryBuilder:
        if not isinstance(target, str) or not _NAME.fullmatch(target):
            raise InvalidQueryError(f"bad join target {str(target)[:60]!r}", name=str(target))
        if target in self._tables():
            raise InvalidQueryError(f"{target!r} is joined already", name=target)
        for source, mapper in self._tables().values():
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
                joined_table = self._fresh(table, target)
                onclause = relationship_onclause(relationship, source, joined_table)
                joined = _Joined(target, joined_table, other, outer, onclause)
                return dataclasses.replace(self, _joins=(*self._joins, joined))
        root = _root(self.source)
        assert root is not None
        other_table = root.metadata.tables.get(target)
        if other_table is not None:
            joined_table = self._fresh(other_table, target)
            for table, _ in self._tables().values():
                try:
                    foreign_key_join = sa.join(table, joined_table).onclause
                except (sa.exc.NoForeignKeysError, sa.exc.AmbiguousForeignKeysError):
                    continue
                joined = _Joined(target, joined_table, None, outer, foreign_key_join)
                return dataclasses.replace(self, _joins=(*self._joins, joined))
        allowed = sorted(
            {
                r
                for _, m in self._tables().values()
                if m is not None
                for r, _ in m.relationships.items()
            }
            | {t for t in root.metadata.tables if t not in self._tables()}
        )
        raise InvalidQueryError(
            f"cannot join {target!r}: no relationship or foreign key leads there",
            name=target,
            allowed=allowed,
        )

    def _fresh(self, table: sa.Table, name: str) -> sa.FromClause:
        """``table``, or an alias named ``name`` when the FROM holds it already (a
        self-referential or second join), so that ``name.column`` means the joined rows."""
        present = any(_base(t) is table for t, _ in self._tables().values())
        return table.alias(name) if present else table


def _base(selectable: sa.FromClause) -> sa.FromClause:
    return selectable.element if isinstance(selectable, sa.Alias) else selectable


def _root(source: Any) -> sa.Table | None:
    if isinstance(source, sa.Table):
        return source
    mapper = _mapper(source)
    table = mapper.local_table if mapper is not None else None
    return table if isinstance(table, sa.Table) else None


def _mapper(source: Any) -> Mapper[Any] | None:
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


def _label(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "value"


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise InvalidQueryError(
            f"{name} must be an integer from 0 to {MAX_LIMIT}, got {str(value)[:40]!r}",
            name=name,
            allowed=(f"0..{MAX_LIMIT}",),
        )
    return value
