"""Views: an entry reading a view depends on the tables the view reads, which only the database
knows. A write never names the view, only its tables, so the cache asks the database which
relations are views and what each reads (PostgreSQL's ``pg_depend``, SQLite's view SQL), once
per process, and tags an entry reading a view with the tokens of those tables too.

The map is asked for again after DDL run through this process, and when a read names a relation
the map does not have (a view created since, by a migration or another process); a relation
still missing then is asked for again at most once a minute. What it cannot see: a view
redefined by another process to read other tables, until this process runs DDL or restarts;
and tables read by a function the view calls. No I/O here: the sync and async caches run
`catalog_query` (in the reading session once it has begun, else on a connection of their own)
and hand the rows to `ViewMap.load`.
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

# every relation with, for a view, each relation its rewrite rule depends on (one row each)
_POSTGRES = text(
    """
    SELECT c.relname, c.relkind = 'v', ref.relname
    FROM pg_catalog.pg_class c
    LEFT JOIN pg_catalog.pg_rewrite r ON c.relkind = 'v' AND r.ev_class = c.oid
    LEFT JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> c.oid
    LEFT JOIN pg_catalog.pg_class ref ON ref.oid = d.refobjid
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
    """
)
_SQLITE = text("SELECT name, type = 'view', sql FROM sqlite_master WHERE type IN ('table', 'view')")


def catalog_query(dialect_name: str) -> TextClause | None:
    """The statement listing a database's relations and what its views read; None for a
    dialect whose views are not looked up (every relation then counts as a table)."""
    return {"postgresql": _POSTGRES, "sqlite": _SQLITE}.get(dialect_name)


class ViewMap:
    """Which relations of one database are views, and the tables each reads, by `table_name`.

    Args:
        dialect_name: The database's dialect (how to read `catalog_query`'s rows).
    """

    def __init__(self, dialect_name: str) -> None:
        self.dialect_name = dialect_name
        self._lock = threading.Lock()
        self._relations: frozenset[str] | None = None
        self._bases: dict[str, frozenset[str]] = {}
        # tables of an entry -> with the tables of the views among them
        self._expanded: dict[tuple[str, ...], tuple[str, ...]] = {}
        # names asked for again and still not found: asked for again after MISSING_RECHECK_S
        self._missing: set[str] = set()
        self._loaded_at = 0.0

    def expand(self, tables: tuple[str, ...], *, read: bool = False) -> tuple[str, ...] | None:
        """``tables`` with every table their views read (recursively), sorted; None when the
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
        names = set(tables)
        pending = [n for n in tables if n in self._bases]
        while pending:
            for base in self._bases.get(pending.pop(), ()):
                if base not in names:
                    names.add(base)
                    pending.append(base)
        found = tuple(sorted(names))
        if missing:  # not kept: the relation may appear, as a view, by the next check
            return found
        if len(self._expanded) >= 2000:
            self._expanded.clear()
        self._expanded[tables] = found
        return found

    def load(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replace the map by what `catalog_query` returned: (name, is a view, what it reads:
        a relation's name on PostgreSQL, the view's SQL on SQLite)."""
        relations: set[str] = set()
        reads: dict[str, set[str]] = {}
        for name, is_view, detail in rows:
            relation = table_name(str(name))
            relations.add(relation)
            if is_view and detail is not None:
                reads.setdefault(relation, set()).add(str(detail))
        bases: dict[str, frozenset[str]] = {}
        for view, details in reads.items():
            if self.dialect_name == "sqlite":  # the view's SQL: the relations it names
                named = {identifier(t) for sql in details for t in code_tokens(sql)}
                found = {table_name(n) for n in named if n is not None} & relations
            else:
                found = {table_name(d) for d in details}
            bases[view] = frozenset(found - {view})
        with self._lock:
            self._relations, self._bases = frozenset(relations), bases
            self._expanded, self._missing = {}, set()
            self._loaded_at = monotonic()

    def forget(self) -> None:
        """Read the catalog again before the next read (DDL ran: views may have changed)."""
        with self._lock:
            self._relations, self._bases = None, {}
            self._expanded, self._missing = {}, set()
