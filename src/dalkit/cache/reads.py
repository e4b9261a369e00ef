"""Which tables a cached read depends on, found from its statement: joins, subqueries, CTEs,
eager relationship loads and loader options, association tables, the expressions of the
models' ``column_property`` attributes (a correlated count of another table's rows), and the
database's functions it calls (`call`, followed by `dalkit.cache.catalog`); SQL text must
declare its tables. Each table by the one name the cache knows it by
(`dalkit.cache.tables.table_name`)."""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Column, MetaData, Table, inspect
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import ColumnClause, Select, TableClause, TextClause, UpdateBase
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import TextualSelect

from dalkit.cache.errors import UncacheableStatementError
from dalkit.cache.functions import calls_in
from dalkit.cache.tables import call, table_name

__all__ = ["declared_names", "opaque_sql", "read_schemas", "statement_tables", "tables_read"]

_EAGER = frozenset({"joined", "selectin", "subquery", "immediate"})
# a text fragment outside a FROM list reads a table only through a subquery; FROM alone is no
# sign of one (EXTRACT(YEAR FROM d), SUBSTRING(s FROM 2), TRIM(LEADING FROM s))
_SUBQUERY_WORD = re.compile(r"\bselect\b", re.IGNORECASE)
# the schemas of the tables cached reads have named (tables_read): where a raw write's target is
# looked up for the tables its foreign keys cascade to (dalkit.cache.capture)
_read_schemas: weakref.WeakSet[MetaData] = weakref.WeakSet()


def statement_tables(statement: Any, tables: Iterable[Any] | None) -> frozenset[str]:
    """The tables a cached read of ``statement`` depends on.

    Args:
        statement: The statement to cache.
        tables: Tables declared by the caller (`declared_names`), required for SQL text.

    Raises:
        UncacheableStatementError: A write, or SQL text (`opaque_sql`) without ``tables``.
    """
    if isinstance(statement, UpdateBase):
        raise UncacheableStatementError("only reads can be cached, not INSERT/UPDATE/DELETE")
    declared = declared_names(tables or ())
    if not declared and (
        isinstance(statement, TextClause | TextualSelect) or opaque_sql(statement)
    ):
        raise UncacheableStatementError(
            "SQL text that may read tables must declare them: cached(session, statement, "
            "tables=['users', ...])"
        )
    found = {*tables_read(statement), *declared}
    text = getattr(statement, "element", statement)  # a TextualSelect's text
    if isinstance(text, TextClause):  # the functions it calls: what they read, or a bypass
        found.update(calls_in(text.text))
    return frozenset(found)


def declared_names(tables: Iterable[Any]) -> list[str]:
    """The names of the tables a caller declares (``tables=[...]`` of ``cached``, ``memoize``).

    Args:
        tables: Names as SQL spells them, Tables, or models (all the tables they map).

    Raises:
        UncacheableStatementError: One is none of these.
    """
    names = []
    for table in tables:
        if isinstance(table, str | Table):
            names.append(table_name(table))
            continue
        mapper = inspect(table, raiseerr=False)
        mapped = getattr(mapper, "tables", None) if isinstance(mapper, Mapper) else None
        if not mapped:
            raise UncacheableStatementError(
                f"tables=[...] takes table names, Tables or mapped models, not {table!r}"
            )
        names.extend(table_name(t) for t in mapped)
    return names


def read_schemas() -> list[MetaData]:
    """The schemas (MetaData) of every table a cached read has named in this process."""
    return list(_read_schemas)


def tables_read(statement: Any) -> frozenset[str]:
    """Every table a statement reads.

    Args:
        statement: A Core or ORM select (or any executable).

    Returns:
        Its tables, including those its eager relationship loads and loader options reach,
        its models' subclasses' and those their ``column_property`` expressions (or a
        ``with_expression``) read, and the functions it calls
        (`call`: the catalog knows what they read); empty for a text statement (which must
        then declare its tables).
    """
    if isinstance(statement, TextClause):
        return frozenset()
    found: set[str] = set()
    mappers: list[Mapper[Any]] = []
    _named_in(statement, found, mappers)
    for description in getattr(statement, "column_descriptions", ()):
        entity = description.get("entity")
        if entity is not None:
            mappers.append(inspect(entity).mapper)
    for option in getattr(statement, "_with_options", ()):
        mappers.extend(_option_mappers(option))
        found.update(_option_secondaries(option))
        for criterion in _option_criteria(option):  # with_expression(), with_loader_criteria()
            _named_in(criterion, found, None)
    seen: set[Mapper[Any]] = set()
    while mappers:
        mapper = mappers.pop()
        if mapper in seen:
            continue
        seen.add(mapper)
        # subclasses whose own tables' columns load with its rows (polymorphic_load: by a
        # second SELECT, or joined in); with_polymorphic's joins are in the statement itself
        mappers.extend(m for m in mapper.self_and_descendants if m.polymorphic_load)
        for table in mapper.tables:
            found.add(table_name(table))
            if isinstance(table, Table):
                _read_schemas.add(table.metadata)
        for prop in mapper.column_attrs:  # loaded with the entity: a subquery may read others
            for column in prop.columns:
                if not (isinstance(column, Column) and column.table in mapper.tables):
                    _named_in(column, found, None)
        for relationship in mapper.relationships:
            if relationship.lazy in _EAGER:
                mappers.append(relationship.mapper)
                if relationship.secondary is not None:
                    found.update(_from_clause_tables(relationship.secondary))
    return frozenset(found)


def _named_in(clause: Any, found: set[str], mappers: list[Mapper[Any]] | None) -> None:
    """Add to ``found`` the tables and function calls ``clause`` names, and to ``mappers``
    (unless None) the mappers of the entities it names."""
    for element in visitors.iterate(clause):
        if isinstance(element, TableClause):  # a Table, or a lightweight sa.table()
            found.add(table_name(element))
            if isinstance(element, Table):
                _read_schemas.add(element.metadata)
        elif isinstance(element, FunctionElement) and isinstance(element.name, str):
            found.add(call(element.name))  # the database's own function may read tables
        if mappers is not None:
            entity = getattr(element, "_annotations", {}).get("parententity")
            if entity is not None:
                mappers.append(entity.mapper)


def opaque_sql(statement: Any) -> bool:
    """Whether ``statement`` holds SQL text that may read tables `tables_read` cannot see: a
    ``text()`` in a FROM list, or a text fragment or literal column with a query in it
    (``text("id IN (SELECT ...)")``). A plain text condition (``text("price > 0")``) is not.

    Args:
        statement: A Core or ORM select.
    """
    for element in visitors.iterate(statement):
        if isinstance(element, Select):
            # a text() in a FROM list is a table's name, or a query, with no word telling which
            if any(isinstance(f, TextClause) for f in element.get_final_froms()):
                return True
            continue
        if isinstance(element, TextClause):
            sql = element.text
        elif isinstance(element, ColumnClause) and element.is_literal:
            sql = element.name
        else:
            continue
        if _SUBQUERY_WORD.search(sql):
            return True
    return False


def _option_mappers(option: Any) -> Iterable[Mapper[Any]]:
    """Mappers named anywhere in a loader option's paths (``selectinload(User.posts)``)."""
    for path in _option_paths(option):
        for item in path:
            if isinstance(item, Mapper):
                yield item
            elif isinstance(item, RelationshipProperty):
                yield item.mapper
            else:
                mapper = getattr(item, "mapper", None)
                if isinstance(mapper, Mapper):
                    yield mapper


def _option_secondaries(option: Any) -> Iterable[str]:
    for path in _option_paths(option):
        for item in path:
            if isinstance(item, RelationshipProperty) and item.secondary is not None:
                yield from _from_clause_tables(item.secondary)


def _option_tree(option: Any) -> Iterable[Any]:
    """A loader option and the options it holds (``selectinload(A.b).selectinload(B.c)``)."""
    yield option
    for child in getattr(option, "context", ()) or ():
        yield from _option_tree(child)


def _option_paths(option: Any) -> Iterable[Any]:
    for node in _option_tree(option):
        path = getattr(node, "path", None)
        if path is not None:
            yield getattr(path, "path", path)


def _option_criteria(option: Any) -> Iterable[Any]:
    """The expressions of a loader option: ``with_expression``'s, a relationship's ``.and_()``,
    ``with_loader_criteria``'s (a lambda's too: iterating it visits what it resolved to)."""
    for node in _option_tree(option):
        yield from getattr(node, "_extra_criteria", ())
        criteria = getattr(node, "where_criteria", None)
        if criteria is not None:
            yield criteria


def _from_clause_tables(clause: Any) -> set[str]:
    return {table_name(e) for e in visitors.iterate(clause) if isinstance(e, Table)}
