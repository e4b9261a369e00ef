"""Which tables a statement reads (joins, subqueries, CTEs, eager relationship loads,
association tables) and which tables a write reaches (its target, plus the tables whose
foreign keys cascade from it), each by the one name the cache knows it by (`table_name`).

Raw SQL may spell a table in any case and with or without its schema (``UPDATE Items``,
``DELETE FROM public.items``): the cache folds every spelling to the table's bare name in lower
case, so that each reaches the entries of the table it writes. Two tables that fold to one name
(same-named tables of two schemas, or ``"Items"`` and ``items`` on PostgreSQL) then share their
version: a write to one costs the other's entries a miss, never a stale read.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlparse
from sqlalchemy import ForeignKey, MetaData, Table, inspect
from sqlalchemy.exc import NoReferencedColumnError, NoReferencedTableError
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import ColumnClause, Select, TableClause, TextClause, UpdateBase
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import TextualSelect

from dalkit.cache.errors import UncacheableStatementError

__all__ = [
    "ALL",
    "CALL",
    "call",
    "is_call",
    "declared_names",
    "cascades_from",
    "count_tables",
    "dependents",
    "each_named",
    "opaque_sql",
    "read_schemas",
    "statement_tables",
    "table_name",
    "tables_read",
    "text_write",
]

#: the name standing for every table: bumped by DDL and by writes whose target is unknown
ALL = "*"
#: what `cascades_from` adds to a table's name
_CASCADES = "|cascades"
#: what ends the name of a function's call among tables (`dalkit.cache.functions`)
CALL = "()"


def call(name: str) -> str:
    """How a call of the database's function ``name`` is named among tables."""
    return name.lower() + CALL


def is_call(name: str) -> bool:
    """Whether ``name``, among an entry's or a write's tables, is a function's call."""
    return name.endswith(CALL)


_KEPT = 2000  # tables tuples whose names each_named keeps, at most


def each_named(
    tables: Iterable[str], name: Callable[[str], str], kept: dict[tuple[str, ...], tuple[str, ...]]
) -> Sequence[str]:
    """``name`` of each of ``tables``; for a tuple (a read's tables: the same few again and
    again), kept in ``kept``, because a read of a partitioned table names every partition."""
    if type(tables) is not tuple:
        return [name(table) for table in tables]
    found = kept.get(tables)
    if found is None:
        if len(kept) >= _KEPT:
            kept.clear()
        found = kept[tables] = tuple(name(table) for table in tables)
    return found


_EAGER = frozenset({"joined", "selectin", "subquery", "immediate"})
_CASCADING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|merge|truncate|create|drop|alter|replace|copy|grant|revoke|"
    r"vacuum|reindex|cluster|comment|lock|call|do|refresh|import|attach|detach|execute)\b",
    re.IGNORECASE,
)
# a text fragment outside a FROM list reads a table only through a subquery; FROM alone is no
# sign of one (EXTRACT(YEAR FROM d), SUBSTRING(s FROM 2), TRIM(LEADING FROM s))
_SUBQUERY_WORD = re.compile(r"\bselect\b", re.IGNORECASE)
_TEMP_TABLE = re.compile(r"^\s*create\s+(?:global\s+|local\s+)?temp(?:orary)?\s+table\b", re.I)
# a name, quoted ("a ""b"" c", any character) or not, and a dotted chain of them (schema.table)
_PART = r'(?:"(?:[^"]|"")*"|[\w$]+)'
_CHAIN = rf"{_PART}(?:\s*\.\s*{_PART})*"
_NAME = rf"({_CHAIN})"
_LAST_PART = re.compile(rf"{_PART}\s*$")
_TARGET = {
    "INSERT": re.compile(rf"^\s*insert\s+(?:or\s+\w+\s+)?into\s+{_NAME}", re.IGNORECASE),
    "UPDATE": re.compile(rf"^\s*update\s+(?:or\s+\w+\s+)?(?:only\s+)?{_NAME}", re.IGNORECASE),
    "DELETE": re.compile(rf"^\s*delete\s+from\s+(?:only\s+)?{_NAME}", re.IGNORECASE),
}
# statements that write only the relations they name, and nothing cascades from: a
# materialized view's refresh (its readers depend on it alone), a TRUNCATE without CASCADE
_REFRESH = re.compile(
    rf"^\s*refresh\s+materialized\s+view\s+(?:concurrently\s+)?{_NAME}(?:\s+with\s+(?:no\s+)?data)?"
    r"\s*;?\s*$",
    re.IGNORECASE,
)
_ONE_TRUNCATED = rf"(?:only\s+)?({_CHAIN})\s*\*?"
_TRUNCATE = re.compile(
    rf"^\s*truncate\s+(?:table\s+)?((?:{_ONE_TRUNCATED}\s*,\s*)*{_ONE_TRUNCATED})"
    r"(?:\s+(?:restart|continue)\s+identity)?(?:\s+restrict)?\s*;?\s*$",
    re.IGNORECASE,
)
# the schemas of the tables cached reads have named (tables_read): where a raw write's target is
# looked up for the tables its foreign keys cascade to (dalkit.cache.capture)
_read_schemas: weakref.WeakSet[MetaData] = weakref.WeakSet()


def table_name(table: Any) -> str:
    """The name the cache knows a table by: its bare name in lower case (module docstring).

    Args:
        table: A Table (or anything with a ``name``), or a name as SQL spells it:
            ``Items``, ``public.items``, ``"my schema"."Items"``.

    Returns:
        The same string for every spelling of one table; ``*`` (every table) stays itself.
    """
    if not isinstance(table, str):
        return str(table.name).lower()
    last = _LAST_PART.search(table.strip())
    name = last.group(0).strip() if last is not None else table
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        name = name[1:-1].replace('""', '"')
    return name.lower()


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
    return frozenset({*tables_read(statement), *declared})


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
        and the functions it calls (`call`: the catalog knows what they read); empty for a
        text statement (which must then declare its tables).
    """
    if isinstance(statement, TextClause):
        return frozenset()
    found: set[str] = set()
    mappers: list[Mapper[Any]] = []
    for element in visitors.iterate(statement):
        if isinstance(element, TableClause):  # a Table, or a lightweight sa.table()
            found.add(table_name(element))
            if isinstance(element, Table):
                _read_schemas.add(element.metadata)
        elif isinstance(element, FunctionElement) and isinstance(element.name, str):
            found.add(call(element.name))  # the database's own function may read tables
        entity = getattr(element, "_annotations", {}).get("parententity")
        if entity is not None:
            mappers.append(entity.mapper)
    for description in getattr(statement, "column_descriptions", ()):
        entity = description.get("entity")
        if entity is not None:
            mappers.append(inspect(entity).mapper)
    for option in getattr(statement, "_with_options", ()):
        mappers.extend(_option_mappers(option))
        found.update(_option_secondaries(option))
    seen: set[Mapper[Any]] = set()
    while mappers:
        mapper = mappers.pop()
        if mapper in seen:
            continue
        seen.add(mapper)
        for table in mapper.tables:
            found.add(table_name(table))
            if isinstance(table, Table):
                _read_schemas.add(table.metadata)
        for relationship in mapper.relationships:
            if relationship.lazy in _EAGER:
                mappers.append(relationship.mapper)
                if relationship.secondary is not None:
                    found.update(_from_clause_tables(relationship.secondary))
    return frozenset(found)


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


def _option_paths(option: Any) -> Iterable[Any]:
    path = getattr(option, "path", None)
    if path is not None:
        yield getattr(path, "path", path)
    for child in getattr(option, "context", ()) or ():
        yield from _option_paths(child)


def _from_clause_tables(clause: Any) -> set[str]:
    return {table_name(e) for e in visitors.iterate(clause) if isinstance(e, Table)}


def cascades_from(name: str) -> str:
    """The name of the token an UPDATE or DELETE of table ``name`` bumps besides the table's
    own, and an INSERT does not: an entry reading a table whose foreign keys cascade from
    ``name`` in the database (`dalkit.cache.catalog`) carries it, so a cascade that no model
    declares reaches it, and an INSERT into ``name``, which cascades nothing, does not."""
    return name + _CASCADES


def count_tables(names: Iterable[str]) -> int:
    """How many of ``names`` are tables (`cascades_from` tokens aside): the invalidations
    the statistics count."""
    return sum(1 for name in names if not name.endswith(_CASCADES))


def dependents(table: Table) -> set[str]:
    """The tables a write to ``table`` changes too.

    Args:
        table: The table written.

    Returns:
        The tables whose foreign keys to ``table`` cascade (``ON DELETE/UPDATE CASCADE``,
        ``SET NULL``, ``SET DEFAULT``), recursively.
    """
    found: set[str] = set()
    pending = [table]
    while pending:
        target = pending.pop()
        for other in target.metadata.tables.values():
            if table_name(other) in found:
                continue
            for fk in other.foreign_keys:
                cascades = (fk.ondelete or "").upper() in _CASCADING or (
                    fk.onupdate or ""
                ).upper() in _CASCADING
                if cascades and _references(fk, target):
                    found.add(table_name(other))
                    pending.append(other)
                    break
    return found


def _references(fk: ForeignKey, target: Table) -> bool:
    try:
        return fk.column.table is target
    except (NoReferencedTableError, NoReferencedColumnError):
        # a key to a table its schema lacks: compared by name, which may only say too much
        return table_name(fk.target_fullname.rsplit(".", 1)[0]) == table_name(target)


def text_write(sql: str) -> tuple[frozenset[str], bool] | None:
    """What a raw SQL text writes, and whether foreign keys may cascade from it (an UPDATE or
    a DELETE; an INSERT changes no other row).

    Args:
        sql: The statement as sent to the database.

    Returns:
        None when it writes nothing; else the target of a plain INSERT, UPDATE or DELETE, of
        a materialized view's REFRESH, the tables of a TRUNCATE without CASCADE, by
        `table_name`, or ``{ALL}`` for DDL or anything else that may write; and the flag.
    """
    if _WRITE_WORDS.search(sql) is None:
        return None
    statements = [s for s in sqlparse.parse(sql) if str(s).strip()]
    if len(statements) != 1:
        return _EVERYTHING
    statement = statements[0]
    kind = statement.get_type()  # type: ignore[no-untyped-call]
    stripped = sqlparse.format(str(statement), strip_comments=True).strip()
    if kind == "SELECT" and not re.search(r"\b(insert|update|delete)\b", stripped, re.I):
        return None
    if _TEMP_TABLE.match(stripped):
        return None  # private to the connection: no other reader can have cached it
    refreshed = _REFRESH.match(stripped)
    if refreshed is not None:
        return frozenset({table_name(refreshed.group(1))}), False
    truncated = _TRUNCATE.match(stripped)
    if truncated is not None:  # (with CASCADE: every table referencing them, so everything)
        names = re.findall(_ONE_TRUNCATED, truncated.group(1), re.IGNORECASE)
        return frozenset(table_name(name) for name in names), False
    pattern = _TARGET.get(kind)
    match = pattern.match(stripped) if pattern is not None else None
    if match is None:
        # a writable CTE, DDL, EXECUTE of a prepared statement, or a statement kind not
        # parsed here: everything
        return _EVERYTHING
    return frozenset({table_name(match.group(1))}), kind != "INSERT"


_EVERYTHING = (frozenset({ALL}), False)
