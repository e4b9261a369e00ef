"""What an entry depends on beyond the tables its statement names, which only the database
knows: views, table inheritance, rules, triggers and foreign keys that cascade. A write names
only the relation it writes, so the cache asks the database once per process (PostgreSQL's
``pg_depend``, ``pg_inherits``, ``pg_trigger``, ``pg_constraint``, ``pg_proc`` and
``pg_attrdef``, in `dalkit.cache.catalog_queries`; SQLite's
``sqlite_master`` and ``pragma_foreign_key_list``) and tags an entry with more tokens:
- a view: the relations it reads, recursively, those the functions it calls read included;
- a parent: its partitions (children), recursively, so a write naming a partition reaches it;
- a partition: its parents, recursively, so a write through the parent reaches it; not its
  siblings, which a write naming only them never changes;
- a table written by a trigger (`dalkit.cache.triggers`), or by a function a column default
  calls (``DEFAULT next_invoice_number()``): the table the trigger fires on or the column is
  in; and every entry: each table with such a trigger or default that may write any table;
- a relation a rule (PostgreSQL's ``CREATE RULE``) names: the relation the rule is on;
- a table whose foreign keys cascade (``ON DELETE``/``ON UPDATE`` ``CASCADE``, ``SET NULL``,
  ``SET DEFAULT``) from others, recursively: their `cascades_from` tokens, which an UPDATE or a
  DELETE of them bumps and an INSERT does not, whether or not a model declares the cascade;
- a table a view reads: the view, when the view takes writes (PostgreSQL's auto-updatable
  views, and views with ``INSTEAD OF`` triggers), since a write naming it changes the table;
- a call of one of the database's functions (`dalkit.cache.functions`): the relations its code
  reads; and a write calling one: the tables its code writes (`calls_written`), a ``CALL`` of
  a procedure likewise (`procedure_writes`).

The catalog also says which tables have row-level security: reads of them bypass the cache
(`CacheCore.bypass_reason`), since the rows a policy shows depend on the session.

The map is asked for again after DDL run through this process, when a read names a relation
the map does not have (a view created since, by a migration or another process; a relation
still missing then is asked for again at most once a minute), and once a minute anyway. So DDL
run by another process (a view or a trigger redefined, a partition attached) reaches this
process's entries within a minute: an entry whose relations changed then carries other tokens
than a read now checks, and is missed. No I/O here: the sync and async caches run
`catalog_query` (in the reading session once it has begun, else on a connection of their own)
and hand the rows to `CatalogMap.load`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from dalkit.cache.catalog_queries import catalog_query
from dalkit.cache.functions import Functions, calls_in, function_facts
from dalkit.cache.tables import ALL, CALL, call, cascades_from, is_call, table_name
from dalkit.cache.triggers import trigger_writes
from dalkit.query.sql_tokens import code_tokens, identifier

__all__ = ["CATALOG_REFRESH_S", "MISSING_RECHECK_S", "CatalogMap"]

_NO_NAMES: frozenset[str] = frozenset()

#: how long a relation the catalog lacked goes unasked for (each read naming it asks after)
MISSING_RECHECK_S = 60.0
#: how often the catalog is read again anyway: DDL run by another process (a view redefined, a
#: trigger or a partition added) changes what entries depend on at the latest then, and an
#: entry whose dependencies changed is no longer served (its tokens are not the new ones)
CATALOG_REFRESH_S = 60.0


@dataclass
class _Catalog:
    """The catalog as one read found it, by `table_name`; replaced whole by the next read, so
    a thread expanding while another loads sees one read's map or the other's, never a mix."""

    relations: frozenset[str] = frozenset()
    # relation -> the relations whose writes reach it: a view's relations, a parent's
    # children, the tables of the triggers and rules writing it, a writable view's view
    bases: dict[str, frozenset[str]] = field(default_factory=dict)
    parents: dict[str, frozenset[str]] = field(default_factory=dict)
    everywhere: tuple[str, ...] = ()  # whose writes may reach any table: a trigger's
    cascading: dict[str, frozenset[str]] = field(default_factory=dict)  # table -> FKs' tables
    guarded: frozenset[str] = frozenset()  # tables with row-level security
    functions: Functions = field(default_factory=lambda: Functions({}, {}))
    calling: bool = False  # whether an expanded read may hold a call (bypass looks then)
    read_at: float = 0.0
    # tables of an entry -> with what the map adds to them
    expanded: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    # names asked for again and still not found: asked for again after MISSING_RECHECK_S
    missing: set[str] = field(default_factory=set)


class CatalogMap:
    """What one database's catalog says an entry depends on, by `table_name`: which relations
    are views and what each reads, which tables inherit from which, what triggers and rules
    write (module docstring).

    Args:
        dialect_name: The database's dialect (how to read `catalog_query`'s rows).
    """

    def __init__(self, dialect_name: str) -> None:
        self.dialect_name = dialect_name
        self._looked_up = catalog_query(dialect_name) is not None
        self._follows_calls = dialect_name == "postgresql"  # SQLite has no functions in SQL
        # None: to be read (again); a dialect whose catalog is not looked up has an empty one
        self._catalog: _Catalog | None = None if self._looked_up else _Catalog()

    def expand(self, tables: tuple[str, ...], *, read: bool = False) -> tuple[str, ...] | None:
        """``tables`` with every relation whose writes reach them (what their views read, their
        partitions, the tables whose triggers and rules write them, recursively; the tables of
        triggers that may write anything), then the parents of all these (recursively),
        sorted; None when the catalog must be read (again) first (`catalog_query`, `load`).

        Args:
            tables: The tables of an entry.
            read: The catalog was just read: expand with what it has, and remember the names
                it lacks, so that they make it read again only after ``MISSING_RECHECK_S``
                (a relation read before a migration created it) or DDL.
        """
        catalog = self._catalog
        if catalog is None:
            if not read:
                return None
            catalog = _Catalog()  # forgotten (DDL) since it was read: what the read had not
        age = monotonic() - catalog.read_at
        fresh = read or not self._looked_up or age < CATALOG_REFRESH_S
        found = catalog.expanded.get(tables)  # the usual case: one dict look-up per read
        if found is not None and fresh:
            return found
        read_tables, unsure = catalog.functions.read_through(tables)
        missing = [n for n in read_tables if n != ALL and n not in catalog.relations]
        if not self._looked_up:
            missing = []
        elif read:
            catalog.missing.update(missing)
        elif (
            not fresh
            or any(n not in catalog.missing for n in missing)
            or (missing and age > MISSING_RECHECK_S)
        ):
            return None
        names = _closure((*read_tables, *catalog.everywhere), catalog.bases)
        if catalog.parents:
            names = _closure(names, catalog.parents)  # a parent's other children not among them
        if catalog.cascading:  # an UPDATE or DELETE of these, or of theirs, cascades here
            names |= {cascades_from(n) for n in _closure(names, catalog.cascading) - names}
        found = tuple(sorted(names | unsure))
        if not catalog.calling and any(map(is_call, found)):
            catalog.calling = True  # its own call, or a view's, of one a read may not skip
        if missing:  # not kept: the relation may appear, as a view, by the next check
            return found
        if len(catalog.expanded) >= 2000:
            catalog.expanded.clear()
        catalog.expanded[tables] = found
        return found

    def bypass(self, tables: tuple[str, ...], *, serve_row_security: bool) -> str | None:
        """Why a read of ``tables`` (as `expand` returned them) goes to the database:
        ``"row security"`` for a table with row-level security (unless ``serve_row_security``),
        ``"function"`` for a call of a function that writes, or whose reads are unknown, or of
        a built-in one bound to the session (`SESSION_BOUND`)."""
        catalog = self._catalog
        if catalog is None:
            return None
        if catalog.guarded and not serve_row_security and not catalog.guarded.isdisjoint(tables):
            return "row security"
        if catalog.calling and any(map(is_call, tables)):
            return "function"  # a call expand kept: it acts, or hides its reads
        return None

    # -- what the functions a statement calls write (dalkit.cache.capture) ----------------------
    def calls_written(self, sql: str) -> frozenset[str]:
        """What the functions ``sql`` calls write (`dalkit.cache.functions`), with what
        cascades from it; while the map is unread or older than ``CATALOG_REFRESH_S`` (a
        function may have been redefined since), the calls themselves, which `resolve`
        replaces at commit, once the catalog has been read again (`refresh_due`)."""
        if not self._follows_calls:
            return _NO_NAMES
        catalog = self._catalog
        if catalog is not None and monotonic() - catalog.read_at < CATALOG_REFRESH_S:
            if not catalog.functions.writes:
                return _NO_NAMES  # the usual case
            calls = calls_in(sql)
            return frozenset(catalog.functions.written_by(calls)) if calls else _NO_NAMES
        return calls_in(sql)

    def procedure_writes(self, procedure: str) -> frozenset[str]:
        """What ``CALL procedure(...)`` writes (``procedure`` as `call` names it): what its code
        writes, and what cascades from that, when the map is younger than
        ``CATALOG_REFRESH_S`` and has the procedure; else everything (the map is unread or
        old, or the procedure is an extension's, in C, or was created since)."""
        catalog = self._catalog
        if (
            not self._follows_calls
            or catalog is None
            or monotonic() - catalog.read_at >= CATALOG_REFRESH_S
            or procedure[: -len(CALL)] not in catalog.functions.reads
        ):
            return frozenset({ALL})
        return frozenset(catalog.functions.written_by((procedure,)))

    def resolve(self, names: Iterable[str]) -> set[str] | None:
        """``names`` with each call (`calls_written`) replaced by what its function writes;
        None when there is a call and the map has not been read."""
        names = set(names)
        if ALL in names or not any(map(is_call, names)):  # (everything: the calls too)
            return {name for name in names if not is_call(name)}
        catalog = self._catalog
        return None if catalog is None else catalog.functions.written_by(names)

    def refresh_due(self) -> bool:
        """Whether a commit's invalidation, which holds calls (`calls_written`), reads the
        catalog before it replaces them: when it is unread, or older than
        ``CATALOG_REFRESH_S`` and no other commit is reading it (which then goes on with it)."""
        if not self._follows_calls:
            return False
        catalog = self._catalog
        if catalog is None:
            return True
        now = monotonic()
        if now - catalog.read_at < CATALOG_REFRESH_S:
            return False
        catalog.read_at = now  # claimed: the other commits meanwhile go on with this map
        return True

    def overlaps(self, written: set[str], tables: tuple[str, ...]) -> bool:
        """Whether a transaction that wrote ``written`` wrote one of ``tables``."""
        resolved = self.resolve(written) if any(map(is_call, written)) else written
        return resolved is None or ALL in resolved or not resolved.isdisjoint(tables)

    def load(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replace the map by what `catalog_query` returned: (name, kind, detail), where kind
        ``"v"`` is a view reading detail (a relation's name on PostgreSQL, the view's SQL on
        SQLite), ``"w"`` such a view taking writes, ``"i"`` a table inheriting from detail,
        ``"r"`` a rule naming detail, ``"t"`` a trigger (`dalkit.cache.triggers`), ``"f"`` a
        foreign key cascading from detail, ``"s"`` row-level security, ``"p"`` a function
        (`dalkit.cache.functions`), ``"c"`` a view calling function detail, ``"d"`` a column
        default calling function detail, and anything else a relation."""
        relations: set[str] = set()
        reads: dict[str, set[str]] = {}
        parents: dict[str, set[str]] = {}
        writable: set[str] = set()  # views whose writes reach the tables they read
        written_by: dict[str, set[str]] = {}  # a table -> the relations whose writes reach it
        everywhere: set[str] = set()  # relations whose triggers may write any table
        cascading: dict[str, set[str]] = {}  # a table -> those its foreign keys cascade from
        guarded: set[str] = set()  # tables with row-level security
        functions: list[tuple[str, str, str, str]] = []
        calls: dict[str, set[str]] = {}  # a view -> the functions it calls
        triggers: list[tuple[str, str]] = []  # (table, "language\nfunction\ncode")
        defaults: dict[str, set[str]] = {}  # a table -> the functions its defaults call
        for name, kind, detail in rows:
            if kind == "p":  # a function: no relation
                language, volatility, code = str(detail).split("\n", 2)
                functions.append((str(name), language, volatility, code))
                continue
            relation = table_name(str(name))
            relations.add(relation)
            if detail is None:
                continue
            if kind in ("v", "w"):
                reads.setdefault(relation, set()).add(str(detail))
                if kind == "w":
                    writable.add(relation)
            elif kind == "i":
                parents.setdefault(relation, set()).add(table_name(str(detail)))
            elif kind == "r":  # every relation a rule names: the ones it writes among them
                written_by.setdefault(table_name(str(detail)), set()).add(relation)
            elif kind == "s":
                guarded.add(relation)
            elif kind == "f":
                cascading.setdefault(relation, set()).add(table_name(str(detail)))
            elif kind == "t":
                triggers.append((relation, str(detail)))
            elif kind == "c":
                calls.setdefault(relation, set()).add(call(str(detail)))
            elif kind == "d":
                defaults.setdefault(relation, set()).add(call(str(detail)))
        facts = function_facts(functions, frozenset(relations))
        side_writes = [(relation, facts.written_by(calls)) for relation, calls in defaults.items()]
        for relation, detail in triggers:  # what its code writes, and the functions it calls
            language, function, code = detail.split("\n", 2)
            writes = set(trigger_writes(language, function, code, facts.reads))
            if language == "plpgsql":
                writes |= facts.written_by(calls_in(code))
            side_writes.append((relation, writes))
        for relation, writes in side_writes:  # what a write of relation may write besides
            if ALL in writes:
                everywhere.add(relation)
            for table in writes - {ALL, relation}:
                written_by.setdefault(table, set()).add(relation)
        bases: dict[str, set[str]] = {}
        for view in {*reads, *calls}:
            details = reads.get(view, set())
            if self.dialect_name == "sqlite":  # the view's SQL: the relations it names
                named = {identifier(t) for sql in details for t in code_tokens(sql)}
                found = {table_name(n) for n in named if n is not None} & relations
            else:
                found = {table_name(d) for d in details}
            read, unsure = facts.read_through(calls.get(view, ()))  # the functions it calls
            bases[view] = (found | set(read) | unsure) - {view}  # (unsure: a read bypasses)
            for table in bases[view] if view in writable else ():
                written_by.setdefault(table, set()).add(view)
        for child, of in parents.items():
            for parent in of:
                bases.setdefault(parent, set()).add(child)
        for table, writers in written_by.items():
            bases.setdefault(table, set()).update(writers)
        self._catalog = _Catalog(
            relations=frozenset(relations),
            bases={name: frozenset(found - {name}) for name, found in bases.items()},
            parents={name: frozenset(of - {name}) for name, of in parents.items()},
            everywhere=tuple(sorted(everywhere)),
            cascading={name: frozenset(of - {name}) for name, of in cascading.items()},
            guarded=frozenset(guarded),
            functions=facts,
            read_at=monotonic(),
        )

    def forget(self) -> None:
        """Read the catalog again before the next read (DDL ran: anything may have changed)."""
        if self._looked_up:
            self._catalog = None


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
