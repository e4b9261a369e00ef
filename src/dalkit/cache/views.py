"""Views and table inheritance: an entry reading a view depends on the tables the view reads,
and one reading a partitioned (or ``INHERITS``) table on its partitions and parents, which only
the database knows. A write names only the relation it writes, so the cache asks the database
which relations are views and what each reads, and which inherit from which (PostgreSQL's
``pg_depend`` and ``pg_inherits``, SQLite's view SQL), once per process, and tags an entry with
the tokens of those relations too:
- a view: the relations it reads, recursively;
- a parent: its partitions (children), recursively, so a write naming a partition reaches it;
- a partition: its parents, recursively, so a write through the parent reaches it; not its
  siblings, which a write naming only them never changes.

The map is asked for again after DDL run through this process, and when a read names a relation
the map does not have (a view created since, by a migration or another process); a relation
still missing then is asked for again at most once a minute. What it cannot see: a view
redefined by another process to read other tables, or a partition attached by another process
and written by its own name, until this process runs DDL or restarts; and tables read by a
function the view calls. No I/O here: the sync and async caches run `catalog_query` (in the
reading session once it has begun, else on a connection of their own) and hand the rows to
`ViewMap.load`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from time import monotonic
from typing import Any

from sqlalchemy import text
from sqlalchemy.sql.elements import TextClause

from dalkit.cache.tables import ALL, table_name
from dalkit.query.sql_tokens import code_tokens, identifier

__all__ = ["MISSING_RECHECK_S", "ViewMap", "catalog_query"]

#: how long a relation the catalog lacked goes unasked for (each read naming it asks after)
MISSING_RECHECK_S = 60.0

# every relation (kind NULL), each relation a view's rewrite rule depends on (kind 'v'), and
# each parent a table inherits from (kind 'i': declarative partitions and INHERITS alike; the
# child's relkind leaves out the partitioned indexes pg_inherits also lists); one row each
_POSTGRES = text(
    """
    SELECT c.relname, CASE WHEN c.relkind = 'v' THEN 'v' END, ref.relname
    FROM pg_catalog.pg_class c
    LEFT JOIN pg_catalog.pg_rewrite r ON c.relkind = 'v' AND r.ev_class = c.oid
    LEFT JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> c.oid
    LEFT JOIN pg_catalog.pg_class ref ON ref.oid = d.refobjid
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
    UNION ALL
    SELECT c.relname, 'i', p.relname
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relkind IN ('r', 'p', 'f')
    JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
    """
)
_SQLITE = text(
    "SELECT name, CASE type WHEN 'view' THEN 'v' END, sql FROM sqlite_master "
    "WHERE type IN ('table', 'view')"
)


def catalog_query(dialect_name: str) -> TextClause | None:
    """The statement listing a database's relations, what its views read and which tables
    inherit from which; None for a dialect whose catalog is not looked up (every relation then
    counts as a plain table)."""
    return {"postgresql": _POSTGRES, "sqlite": _SQLITE}.get(dialect_name)


class ViewMap:
    """Which relations of one database are views and what each reads, and which tables inherit
    from which, by `table_name`.

    Args:
        dialect_name: The database's dialect (how to read `catalog_query`'s rows).
    """

    def __init__(self, dialect_name: str) -> None:
        self.dialect_name = dialect_name
        self._lock = threading.Lock()
        self._relations: frozenset[str] | None = None
        # what reading a relation reads too: a view's relations, a parent's children
        self._bases: dict[str, frozenset[str]] = {}
        self._parents: dict[str, frozenset[str]] = {}
        # tables of an entry -> with the relations their views, partitions and parents add
        self._expanded: dict[tuple[str, ...], tuple[str, ...]] = {}
        # names asked for again and still not found: asked for again after MISSING_RECHECK_S
        self._missing: set[str] = set()
        self._loaded_at = 0.0

    def expand(self, tables: tuple[str, ...], *, read: bool = False) -> tuple[str, ...] | None:
        """``tables`` with every relation their views read and every partition of theirs
        (recursively), then the parents of all these (recursively), sorted; None when the
        catalog must be read first (`catalog_query`, then `load`).

        Args:
            tables: The tables of an entry.
            read: The catalog was just read: expand with what it has, and remember the names
                it lacks, so that they make it read again only after ``MISSING_RECHECK_S``
                (a relation read before a migration created it) or DDL.
        """
        found = self._expanded.get(tables)  # the usual case: one dict look-up per read
        if found is not None:
            return found
        missing: list[str] = []
        if catalog_query(self.dialect_name) is not None:
            relations = self._relations
            missing = [n for n in tables if n != ALL and n not in (relations or ())]
            if read:
                self._missing.update(missing)
            elif (
                relations is None
                or any(n not in self._missing for n in missing)
                or (missing and monotonic() - self._loaded_at > MISSING_RECHECK_S)
            ):
                return None
        names = _closure(tables, self._bases)
        if self._parents:
            names = _closure(names, self._parents)  # a parent's other children not among them
        found = tuple(sorted(names))
        if missing:  # not kept: the relation may appear, as a view, by the next check
            return found
        if len(self._expanded) >= 2000:
            self._expanded.clear()
        self._expanded[tables] = found
        return found

    def load(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replace the map by what `catalog_query` returned: (name, kind, detail), where kind
        ``"v"`` is a view reading detail (a relation's name on PostgreSQL, the view's SQL on
        SQLite), ``"i"`` a table inheriting from detail, and anything else a relation."""
        relations: set[str] = set()
        reads: dict[str, set[str]] = {}
        parents: dict[str, set[str]] = {}
        for name, kind, detail in rows:
            relation = table_name(str(name))
            relations.add(relation)
            if kind == "v" and detail is not None:
                reads.setdefault(relation, set()).add(str(detail))
            elif kind == "i" and detail is not None:
                parents.setdefault(relation, set()).add(table_name(str(detail)))
        bases: dict[str, set[str]] = {}
        for view, details in reads.items():
            if self.dialect_name == "sqlite":  # the view's SQL: the relations it names
                named = {identifier(t) for sql in details for t in code_tokens(sql)}
                found = {table_name(n) for n in named if n is not None} & relations
            else:
                found = {table_name(d) for d in details}
            bases[view] = found - {view}
        for child, of in parents.items():
            for parent in of:
                bases.setdefault(parent, set()).add(child)
        with self._lock:
            self._relations = frozenset(relations)
            self._bases = {name: frozenset(found) for name, found in bases.items()}
            self._parents = {name: frozenset(of - {name}) for name, of in parents.items()}
            self._expanded, self._missing = {}, set()
            self._loaded_at = monotonic()

    def forget(self) -> None:
        """Read the catalog again before the next read (DDL ran: views may have changed)."""
        with self._lock:
            self._relations, self._bases, self._parents = None, {}, {}
            self._expanded, self._missing = {}, set()


def _closure(names: Iterable[str], edges: dict[str, frozenset[str]]) -> set[str]:
    """``names`` and every name reached from them through ``edges``."""
    found = set(names)
    pending = [n for n in found if n in edges]
    while pending:
        for reached in edges.get(pending.pop(), ()):
            if reached not in found:
                found.add(reached)
                pending.append(reached)
    return found
