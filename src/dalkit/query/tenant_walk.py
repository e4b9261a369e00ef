"""Tenant scoping's walk of a statement it scoped: whether what it added covers every place the
statement reads or writes a tenant-scoped table's rows. A statement it leaves bare is left
unmarked, and the guard (`.tenant_guard`) refuses it by its SQL text.

What the scoping adds (`dalkit.query.tenant`, `.tenant_writes`) covers

- a model, wherever it appears (its criteria: ``with_loader_criteria``, which SQLAlchemy applies
  to the models of the statement and of its subqueries, also under a Core statement);
- a Core select's own FROM list (a condition on each tenant-scoped table, or alias of one);
- an INSERT's, UPDATE's or DELETE's target (stamped rows, a condition), and the tables an
  UPDATE or DELETE reads besides (``UPDATE ... FROM``: a condition on each).

It cannot cover a tenant-scoped ``Table`` (or an alias of one) read in a subquery, or beside
the models of an ORM select; a table that only shares a tenant-scoped table's name
(``sa.table("t")``, another MetaData's); or SQL text inside the statement that names one
(``text()``, ``literal_column()``, a custom operator, an unquoted name, a prefix, a suffix, a
hint), whose meaning the scoping cannot read. The SQL the ORM adds when it compiles a select
is walked too (`_loaded_sql`): the ``column_property`` (and ``query_expression`` default) SQL
of the models it loads, whose subqueries' models the criteria reach, and a
``with_expression()`` option's SQL, whose subqueries they do not reach, even a model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.sql.base import ExecutableOption
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ColumnClause, quoted_name
from sqlalchemy.sql.operators import custom_op
from sqlalchemy.sql.selectable import FromClauseAlias

from dalkit.query.tenant_guard import is_scoped_table, mentions_scoped, registry

__all__ = ["leaves_bare", "read_table", "scoped_source"]

# statement shape (SQLAlchemy's cache key, memoized on the statement) -> whether it leaves a
# tenant-scoped table bare: walked once per shape (15 to 25 us), looked up after; forgotten
# when another table is registered
_BARE: dict[Any, bool] = {}
_BARE_MAX = 2000
_decided_under: object = None


def leaves_bare(statement: Any, orm: bool) -> bool:
    """Whether what the scoping added to ``statement`` misses a place it reads or writes a
    tenant-scoped table's rows (see the module's docstring).

    Args:
        statement: The scoped statement: a select, or an INSERT, UPDATE or DELETE.
        orm: Whether a select is an ORM select (the criteria cover its models; a Core select's
            conditions cover its FROM list).
    """
    global _decided_under
    tables = registry()
    if tables is not _decided_under:
        _BARE.clear()
        _decided_under = tables
    cache_key = statement._generate_cache_key()
    found = None if cache_key is None else _BARE.get(cache_key.key)
    if found is None:
        found = _Walk(statement, orm).bare()
        if cache_key is not None:
            if len(_BARE) >= _BARE_MAX:
                _BARE.clear()
            _BARE[cache_key.key] = found
    return found


def read_table(item: Any) -> Any:
    """The table a FROM element reads rows of directly: the element itself when it is a table,
    or what an alias of one reads (``table.alias()``, ``aliased(Model)``'s, a TABLESAMPLE);
    None for anything else (a join, a subquery, a function).

    Args:
        item: Any FROM element.
    """
    while isinstance(item, FromClauseAlias):
        item = item.element
    return item if isinstance(item, sa.TableClause) else None


def scoped_source(item: Any) -> bool:
    """Whether ``item`` is a tenant-scoped model's table or an alias of one: what a condition
    on its ``tenant_id`` scopes.

    Args:
        item: Any FROM element.
    """
    return is_scoped_table(read_table(item))


def _named_like_scoped(table: Any) -> bool:
    return table is not None and table.name.lower() in registry()


class _At(NamedTuple):
    """Where an element is in the statement: in a subquery (``nested``); where the criteria
    reach the models of its subqueries (``covered``: not in a ``with_expression()``); in a
    ``column_property``'s SQL, whose columns of ``row`` (its model's tables) are the row's."""

    nested: bool
    covered: bool = True
    row: frozenset[Any] = frozenset()


class _Walk:
    """One walk of a statement. A Table's own column (no model's annotation) is allowed at the
    top of an ORM select only where a model reads the same table (a repository's ORDER BY):
    ``plain`` and ``entities`` hold those tables, compared at the end."""

    def __init__(self, statement: Any, orm: bool) -> None:
        self.root = statement
        self.orm = orm
        self.dml = isinstance(statement, UpdateBase)
        self.target = read_table(statement.table) if self.dml else None
        # UPDATE ... FROM and DELETE ... USING: the scoping puts a condition on what they read
        self.reads_covered = isinstance(statement, sa.Update | sa.Delete)
        self.plain: set[Any] = set()
        self.entities: set[Any] = set()

    def bare(self) -> bool:
        stack: list[tuple[Any, _At]] = [(self.root, _At(nested=False))]
        seen: set[tuple[int, _At]] = set()
        while stack:
            element, at = stack.pop()
            if (id(element), at) in seen:
                continue
            seen.add((id(element), at))
            if _fragment(element):
                return True
            if isinstance(element, ColumnClause):
                # judged as a column: its table, a child, would look like a FROM of its own
                if self._column(element, at):
                    return True
                source = element.table
                if isinstance(source, sa.FromClause) and read_table(source) is None:
                    # a subquery's or CTE's column: what it reads is walked through it, as a
                    # select reaches it through its columns alone (select(sub.c.x))
                    stack.append((source, at))
                continue
            if isinstance(element, sa.FromClause) and not isinstance(element, sa.Join):
                table = read_table(element)
                if table is not None:
                    if self._from(element, table, at):
                        return True
                    stack.extend(self._loaded_sql(at.nested, _mappers_of(element)))
                    continue  # a table's columns, an alias's table: judged here already
            if isinstance(element, sa.Select):
                stack.extend(self._option_sql(element, element is not self.root or at.nested))
            elif mappers := _mappers_of(element):  # a column_property named by its attribute
                at = at._replace(row=at.row | {t._deannotate() for t in mappers[0].tables})
            if element is not self.root and isinstance(element, sa.Select | sa.CompoundSelect):
                at = at._replace(nested=True, row=_correlated(element, at.row))
            joined = self.entities if not at.nested else set()
            stack.extend((c, at) for c in _children(element, joined))
        return bool(self.plain - self.entities)

    def _loaded_sql(self, nested: bool, mappers: Iterable[Any]) -> Iterator[tuple[Any, _At]]:
        """The ``column_property`` SQL of ``mappers``, which the ORM adds where it loads them
        (and of the models it loads with them by a joined eager load); the criteria reach the
        models of its subqueries, and its columns of the models' own tables are the row's."""
        for mapper in _loaded_with(mappers):
            own = frozenset(t._deannotate() for t in mapper.tables)
            if not nested:
                self.entities.update(own)
            for prop in mapper.column_attrs:
                for column in prop.columns:
                    if not isinstance(column, sa.Column):
                        yield column, _At(nested=nested, row=own)

    def _option_sql(self, select: Any, nested: bool) -> Iterator[tuple[Any, _At]]:
        """What a select's loader options add to it: the SQL of a ``with_expression()`` (or of
        a relationship option's ``and_()``), which no criteria reach, and the ``column_property``
        SQL of the models a joined eager load option loads."""
        for option in select._with_options:
            for element in (
                getattr(option, "context", ()) if isinstance(option, ExecutableOption) else ()
            ):
                at = _At(nested=nested, covered=False)
                yield from ((c, at) for c in element._extra_criteria)
                yield from self._loaded_sql(nested, [m for m in element.path if _is_mapper(m)])

    def _column(self, column: Any, at: _At) -> bool:
        source = column.table
        table = read_table(source)
        if not _named_like_scoped(table):
            return False
        if not is_scoped_table(table):
            return True  # another table of a scoped table's name: no criteria reach it
        if "parententity" in column._annotations:
            if not at.nested and source is table:
                self.entities.add(table._deannotate())
            return at.nested and not at.covered
        if source is table and table._deannotate() in at.row:
            return False  # a column_property's subquery correlated to the row it is part of
        if at.nested:
            return True
        if self.dml:
            return not self._dml_covers(source, table)
        if not self.orm:
            return False  # a Core select: the conditions cover its FROM list
        if source is not table:
            return True  # an alias of the Table beside an ORM select's models
        self.plain.add(table._deannotate())
        return False

    def _from(self, item: Any, table: Any, at: _At) -> bool:
        if not _named_like_scoped(table):
            return False
        if not is_scoped_table(table):
            return True
        if "parententity" in item._annotations:
            if not at.nested and item is table:
                self.entities.add(table._deannotate())
            return at.nested and not at.covered
        if at.nested:
            return True
        if self.dml:
            return not self._dml_covers(item, table)
        # a Core select's conditions cover its FROM list; an ORM select's criteria never
        # reach a Table put in its FROM list or joined by itself
        return self.orm

    def _dml_covers(self, source: Any, table: Any) -> bool:
        target = self.target._deannotate() if self.target is not None else None
        if table._deannotate() is target:
            if source is table:
                return True  # the target: stamped (INSERT) or given a condition
            # INSERT ... ON CONFLICT's ``excluded``: the row being inserted, stamped
            return isinstance(self.root, sa.Insert) and str(source.name) == "excluded"
        return self.reads_covered and scoped_source(source)


def _is_mapper(item: Any) -> bool:
    return isinstance(item, sa.orm.Mapper)


def _correlated(select: Any, row: frozenset[Any]) -> frozenset[Any]:
    """Of ``row``'s tables, those a subquery still reads from the enclosing row: all, unless it
    turns auto-correlation off or correlates other tables only."""
    if not row or not select._auto_correlate or select._correlate_except is not None:
        return frozenset()
    if select._correlate:
        return row & {t._deannotate() for t in select._correlate}
    return row


def _mappers_of(item: Any) -> list[Any]:
    """The mapper whose entity a FROM element is (a model's table, an ``aliased()`` one's
    alias) or whose attribute an expression is, as a list; none for a Table read as itself."""
    entity = item._annotations.get("parententity")
    return [] if entity is None else [entity.mapper]


def _loaded_with(mappers: Iterable[Any]) -> list[Any]:
    """``mappers``, the subclasses a polymorphic load may read, and the models their joined
    eager relationships load in the same statement, transitively."""
    found: list[Any] = []
    pending = list(mappers)
    while pending:
        mapper = pending.pop()
        if mapper in found:
            continue
        found.append(mapper)
        pending.extend(mapper.self_and_descendants)
        pending.extend(r.mapper for r in mapper.relationships if r.lazy == "joined")
    return found


def _children(element: Any, joined: set[Any]) -> list[Any]:
    """What to walk of ``element``; a select's relationship joins (``join(Model.rel)``), which
    the criteria reach, put the tables they join into ``joined``."""
    if isinstance(element, UpdateBase):
        # SQLAlchemy's traversal leaves out a multi-row values([...]): each value, walked
        values = [*element.get_children(), *(getattr(element, "_values", None) or {}).values()]
        for group in getattr(element, "_multi_values", ()):
            for row in group:
                values.extend(row.values() if isinstance(row, Mapping) else row)
        return [c for c in values if isinstance(c, sa.ClauseElement)]
    if not isinstance(element, sa.Select):
        return [c for c in element.get_children() if isinstance(c, sa.ClauseElement)]
    # its own parts, FROM list as given included; not the FROM elements it derives from its
    # columns (their tables, stripped of the model's annotation the criteria follow), nor the
    # tables it correlates (read by the enclosing statement)
    found: list[Any] = list(
        super(sa.Select, element).get_children(
            omit_attrs=("_correlate", "_correlate_except", "_setup_joins")
        )
    )
    for target, onclause, from_, _ in element._setup_joins:
        prop = getattr(sa.inspect(target, raiseerr=False), "property", None)
        if isinstance(prop, sa.orm.RelationshipProperty):
            # join(Model.rel): the criteria reach the model it joins (and its ON clause, the
            # relationship's own columns, names the two models); the table it joins is the
            # model's own unless the join is to an alias (of_type), whose columns carry it
            if getattr(target, "_of_type", None) is None:
                joined.update(prop.mapper.tables)
        else:
            found.append(target)
            if not isinstance(sa.inspect(onclause, raiseerr=False), sa.orm.QueryableAttribute):
                found.append(onclause)
        found.append(from_)
    return [c for c in found if isinstance(c, sa.ClauseElement)]


def _fragment(element: Any) -> bool:
    """Whether ``element`` carries SQL text, rendered as it is, that mentions a tenant-scoped
    table."""
    texts: list[str] = []
    if isinstance(element, sa.TextClause):
        texts.append(element.text)
    if isinstance(element, ColumnClause) and element.is_literal:
        texts.append(str(element.name))
    if isinstance(element, ColumnClause | sa.TableClause | sa.sql.elements.Label):
        name = element.name
        if isinstance(name, quoted_name) and name.quote is False:
            texts.append(str(name))
    for attribute in ("operator", "modifier"):
        operator = getattr(element, attribute, None)
        if isinstance(operator, custom_op):
            texts.append(str(operator.opstring))
    collation = getattr(element, "collation", None)
    if isinstance(collation, str):
        texts.append(collation)
    texts.extend(str(name) for name in getattr(element, "packagenames", None) or ())
    for attribute in ("_prefixes", "_suffixes"):
        texts.extend(str(getattr(p, "text", p)) for p, _ in getattr(element, attribute, ()))
    texts.extend(str(hint) for _, hint in getattr(element, "_statement_hints", ()))
    texts.extend(str(hint) for hint in dict(getattr(element, "_hints", None) or {}).values())
    return any(mentions_scoped(text) for text in texts)
