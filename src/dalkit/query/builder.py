"""QueryBuilder: SELECTs assembled from names that are checked against the metadata. No I/O.

Every identifier (table, relationship, column), operator, aggregate, direction and limit is
looked up in an allow-list; anything else raises InvalidQueryError. Values are always bound. The
builder is immutable: each method returns a new one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper

from dalkit.errors import InvalidQueryError
from dalkit.query.fields import FieldInfo
from dalkit.query.lookups import (
    AGGREGATE,
    DIALECTS,
    Joined,
    Tables,
    aggregate_of,
    condition_of,
    count_of,
    field_of,
    join_of,
    label_of,
    mapper_of,
    root_table,
)
from dalkit.query.soft_delete import live_condition

__all__ = ["QueryBuilder"]


@dataclasses.dataclass(frozen=True)
class QueryBuilder:
    """``QueryBuilder(User).join("posts").select("name", "count(posts.id)").group_by("name")``.

    Attributes:
        source: A mapped class or a Table; joins follow the mapped class's relationships or,
            for tables, the foreign keys of the same MetaData.
        dialect: ``"postgresql"`` or ``"sqlite"``: gives ``like`` the repositories' meaning.

    Raises:
        InvalidQueryError: For an unknown dialect, or a source that is not a model or Table.

    Examples:
        ```python
        query = (
            QueryBuilder(User)
            .join("posts")
            .select("name", "count(posts.id)")
            .where("age", ">=", 18)
            .group_by("name")
            .order_by("count(posts.id)", "desc")
            .limit(10)
        )
        rows = session.execute(query.build()).all()
        ```
    """

    source: Any
    dialect: str | None = None
    _joins: tuple[Joined, ...] = ()
    _columns: tuple[str, ...] = ()
    _where: tuple[Any, ...] = ()
    _group_by: tuple[str, ...] = ()
    _having: tuple[Any, ...] = ()
    _order_by: tuple[tuple[str, bool], ...] = ()
    _limit: int | None = None
    _offset: int | None = None

    def __post_init__(self) -> None:
        if self.dialect is not None and self.dialect not in DIALECTS:
            raise InvalidQueryError(
                f"unknown dialect {str(self.dialect)[:40]!r}",
                name=str(self.dialect),
                allowed=list(DIALECTS),
            )
        if root_table(self.source) is None:
            raise InvalidQueryError(
                f"QueryBuilder needs a mapped class or a Table, got {type(self.source).__name__}",
                name=repr(self.source)[:80],
            )

    # --- building ---------------------------------------------------------------------------

    def select(self, *columns: str) -> QueryBuilder:
        """Add ``columns`` (``"name"``, ``"posts.title"``, ``"count(posts.id)"``) to select.

        Args:
            *columns: Column names, ``table.column`` references or aggregates.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For a column or aggregate that does not exist.
        """
        for column in columns:
            self._expression(column)
        return dataclasses.replace(self, _columns=self._columns + tuple(columns))

    def join(self, target: str) -> QueryBuilder:
        """Inner-join the relationship (or foreign-key-linked table) named ``target``.

        Args:
            target: A relationship of the source (or a joined table), or a table name.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For a target that no relationship or foreign key reaches.
        """
        return self._join(target, outer=False)

    def left_join(self, target: str) -> QueryBuilder:
        """`join()` as a LEFT OUTER JOIN: rows without a match are kept.

        Args:
            target: A relationship of the source (or a joined table), or a table name.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For a target that no relationship or foreign key reaches.
        """
        return self._join(target, outer=True)

    def where(self, column: str, op: str, value: Any = None) -> QueryBuilder:
        """AND ``column op value`` (``"age", ">=", 18``; ``value`` is always bound).

        Args:
            column: A column name or ``table.column`` reference.
            op: An operator: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``like``, ...
            value: The value, coerced to the column's type.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For an unknown column or operator, or a value of the wrong type.
        """
        field = self._field(column)
        condition = condition_of(field, op, value, column)
        return dataclasses.replace(
            self, _where=(*self._where, condition.to_sql(self.dialect or ""))
        )

    def group_by(self, *columns: str) -> QueryBuilder:
        """Group by ``columns``: each plain column selected next to an aggregate.

        Args:
            *columns: Column names or ``table.column`` references.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For a column that does not exist.
        """
        for column in columns:
            self._field(column)
        return dataclasses.replace(self, _group_by=self._group_by + tuple(columns))

    def having(self, aggregate: str, op: str, value: Any) -> QueryBuilder:
        """AND ``aggregate op value`` on the groups (``"count(posts.id)", ">", 5``).

        Args:
            aggregate: ``count``, ``sum``, ``avg``, ``min`` or ``max`` of a column (or ``*``).
            op: A comparison operator.
            value: The value, bound.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For something that is not an aggregate, or an unknown operator.
        """
        expression, field = aggregate_of(self._tables(), aggregate)
        if field is None:
            raise InvalidQueryError(f"{aggregate!r:.60} is not an aggregate", name=str(aggregate))
        condition = condition_of(field, op, value, aggregate)
        clause = condition.to_sql(self.dialect or "", target=expression)
        return dataclasses.replace(self, _having=(*self._having, clause))

    def order_by(self, column: str, direction: str = "asc") -> QueryBuilder:
        """Order by ``column`` (or an aggregate), ``"asc"`` or ``"desc"``, after earlier keys.

        Args:
            column: A column name, ``table.column`` reference or aggregate.
            direction: ``"asc"`` or ``"desc"``.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For an unknown column or direction.
        """
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
        """Return at most ``count`` rows.

        Args:
            count: A non-negative integer.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For anything else.
        """
        return dataclasses.replace(self, _limit=count_of(count, "limit"))

    def offset(self, count: int) -> QueryBuilder:
        """Skip the first ``count`` rows.

        Args:
            count: A non-negative integer.

        Returns:
            A new builder; this one is unchanged.

        Raises:
            InvalidQueryError: For anything else.
        """
        return dataclasses.replace(self, _offset=count_of(count, "offset"))

    def build(self) -> sa.Select[Any]:
        """The SELECT; plain columns next to aggregates must be grouped by.

        Returns:
            The statement, every value a bound parameter.

        Raises:
            InvalidQueryError: For a plain column selected next to an aggregate, ungrouped.
        """
        root = root_table(self.source)
        assert root is not None
        selected = self._columns or tuple(c.name for c in root.columns)
        expressions = [self._expression(c).label(label_of(c)) for c in selected]
        has_aggregate = any(AGGREGATE.fullmatch(c) for c in selected)
        if has_aggregate:
            ungrouped = [
                c for c in selected if not AGGREGATE.fullmatch(c) and c not in self._group_by
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
        """The SQL for display, with ``:name``/``%(name)s`` placeholders where values go.

        Args:
            dialect: ``"postgresql"`` or ``"sqlite"`` (default: the builder's, else PostgreSQL).

        Returns:
            The SQL text; values are never pasted in.

        Raises:
            InvalidQueryError: For an unknown dialect.
        """
        name = dialect or self.dialect or "postgresql"
        if name not in DIALECTS:
            raise InvalidQueryError(
                f"unknown dialect {name[:40]!r}", name=name, allowed=list(DIALECTS)
            )
        chosen: Dialect = DIALECTS[name]()
        return str(self.build().compile(dialect=chosen))

    # --- lookups ----------------------------------------------------------------------------

    def _tables(self) -> Tables:
        root = root_table(self.source)
        assert root is not None
        found: dict[str | None, tuple[sa.FromClause, Mapper[Any] | None]] = {
            None: (root, mapper_of(self.source))
        }
        for joined in self._joins:
            found[joined.name] = (joined.table, joined.mapper)
        return found

    def _field(self, reference: object) -> FieldInfo:
        return field_of(self._tables(), reference)

    def _expression(self, text: object) -> sa.ColumnElement[Any]:
        return aggregate_of(self._tables(), text)[0]

    def _join(self, target: object, *, outer: bool) -> QueryBuilder:
        joined = join_of(self.source, self._tables(), target, outer=outer)
        return dataclasses.replace(self, _joins=(*self._joins, joined))
