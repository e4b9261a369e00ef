"""Rows of audited models that a DELETE, or an UPDATE of a referenced key, changes through their
foreign keys, which no statement of the write names: ``ON DELETE`` / ``ON UPDATE`` actions
(``CASCADE``, ``SET NULL``, ``SET DEFAULT``) applied by the database, and the ORM nulling the
children of a deleted parent (a relationship without a delete cascade). They are read before
the write (`Dependents.add`) and recorded after it (`Dependents.record`): the rows gone as
deletes, the rows changed as updates. An ``ON UPDATE`` action changes the children's foreign
key, which sets off the ``ON UPDATE`` actions of foreign keys referencing it in turn: those are
followed too (a composite key carrying an organisation's code down two tables). A row whose
primary key such an action changes could not be found again: the write is refused.

Found from the metadata of the table written: each audited table with a foreign key to it,
and, through ``ON DELETE CASCADE``, the tables whose rows that deletion removes in turn (an
unaudited table in the middle of a chain, or the table itself for a tree, included, down to
`MAX_DEPTH` levels). A foreign key with no ``ON DELETE`` action makes the DELETE fail while
rows reference it: reading them then finds nothing to record. Either way the query is paid only
when a table that an audited one references loses rows.

Every row is recorded even with other transactions writing (PostgreSQL, READ COMMITTED): the
rows of the table written are locked first (``FOR UPDATE``), then the rows referencing them read
and locked, level by level (a table in between too). A row that another transaction inserts
on one of them, or moves to one, waits for this transaction (its foreign key check takes a lock
on the row it references); read before that lock, it could be committed after the read and
cascaded to unrecorded. A statement is then limited to the rows that were locked
(`Dependents.add` returns their keys): a row that another transaction made match its WHERE in
between, children included, is left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.records import IN_CHUNK, record_since, temporary_table
from dalkit.audit.registry import ModelAudit, audited_generation, audited_tables, table_audit
from dalkit.query.tenant_guard import TENANT_CHECKED

__all__ = [
    "MAX_DEPTH",
    "Dependents",
    "cascade_parents",
    "has_audited_dependents",
    "referenced_columns",
]

#: levels of ON DELETE CASCADE followed from the table written (a tree deletes its subtrees)
MAX_DEPTH = 16


@dataclasses.dataclass(frozen=True, slots=True)
class _Edge:
    """A foreign key of ``table`` to the table written: its rows that a DELETE reaches."""

    table: sa.Table
    config: ModelAudit | None  # None: not audited, followed for its own cascades
    local: tuple[sa.Column[Any], ...]  # the referencing columns
    remote: tuple[sa.Column[Any], ...]  # the referenced ones, in the same order
    # ON DELETE CASCADE (the rows are deleted), or an ON UPDATE action (their referencing
    # columns change): their own dependents are reached in turn
    cascades: bool
    moves_key: bool = False  # ON UPDATE: the referencing columns hold the audited row's key


_ACTING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})
_edges: dict[tuple[sa.Table, int, bool, bool], tuple[_Edge, ...]] = {}


def has_audited_dependents(table: object, *, by_orm: bool = False, updating: bool = False) -> bool:
    """Whether deleting rows of ``table`` (or, ``updating``, changing their referenced keys)
    can change rows of an audited model: through the database's ON DELETE (ON UPDATE)
    actions, or also (``by_orm``) through any foreign key, whose rows the ORM may change
    itself."""
    return isinstance(table, sa.Table) and bool(_edges_of(table, by_orm, updating))


def referenced_columns(table: sa.Table, *, by_orm: bool = False) -> frozenset[sa.Column[Any]]:
    """The columns of ``table`` whose change an ON UPDATE action carries to audited rows."""
    return frozenset(
        column for edge in _edges_of(table, by_orm, updating=True) for column in edge.remote
    )


def cascade_parents(*, updating: bool = False, truncating: bool = False) -> list[sa.Table]:
    """The tables whose DELETE (``updating``: UPDATE; ``truncating``: ``TRUNCATE ...
    CASCADE``, which empties every table referencing them by any foreign key, whatever its
    ``ON DELETE`` action, and those referencing these in turn) can change rows of an audited
    model (for raw SQL)."""
    generation = audited_generation()
    mode = (updating, truncating)
    known = _parents.get(mode)
    if known is None or known[0] != generation:
        metadatas = {table.metadata for table in audited_tables()}
        if truncating:
            found = sorted(_truncation_reaches(metadatas), key=lambda table: table.fullname)
        else:
            found = [
                table
                for metadata in metadatas
                for table in metadata.tables.values()
                if has_audited_dependents(table, updating=updating)
            ]
        known = _parents[mode] = (generation, found)
    return list(known[1])


# (updating, truncating) -> (generation, the tables)
_parents: dict[tuple[bool, bool], tuple[int, list[sa.Table]]] = {}


def _truncation_reaches(metadatas: Collection[sa.MetaData]) -> set[sa.Table]:
    """The tables whose ``TRUNCATE ... CASCADE`` empties an audited table: those it references
    by a foreign key, and the tables those reference, up the chain."""
    reached = {table for table in audited_tables() if table.metadata in metadatas}
    pending = list(reached)
    while pending:
        for constraint in pending.pop().foreign_key_constraints:
            referred = constraint.referred_table
            if referred not in reached:
                reached.add(referred)
                pending.append(referred)
    return reached


class Dependents:
    """The audited rows that the DELETEs of one write may change, read before it."""

    def __init__(self, *, refusing: bool = True) -> None:
        """Args:
        refusing: Whether a write whose rows cannot be followed is refused (False inside
            `dalkit.audit.unaudited()`).
        """
        self._refusing = refusing
        # per audited model: its rows by primary key, as they were
        self._before: dict[int, tuple[ModelAudit, dict[tuple[Any, ...], dict[str, Any]]]] = {}
        self._temporary: list[sa.Table] = []  # of locked keys, dropped once recorded

    def add(
        self,
        session: Session,
        table: sa.Table,
        where: Any,
        params: Mapping[str, Any] | None = None,
        *,
        skip: Collection[tuple[sa.Table, tuple[Any, ...]]] = (),
        by_orm: bool = False,
        updating: bool = False,
    ) -> Any:
        """Read (and lock) the audited rows that reference the rows of ``table`` matching
        ``where``, once those rows are locked (`lock_keys`): a row that another transaction
        makes reference them after that read waits for this transaction's end, not cascaded
        to unrecorded; so do the rows of a table in between (a chain), each locked before the
        rows referencing it are read.

        Args:
            session: The session whose transaction writes.
            table: The table losing rows.
            where: Which of its rows (a SQL expression over ``table``; None: all of them).
            params: Bound parameters of ``where``.
            skip: ``(table, primary key)`` of rows recorded another way (the entities the flush
                deletes or changes itself).
            by_orm: Whether the ORM writes (a flush): it may change the rows of any foreign
                key itself; a statement changes only those of ON DELETE / UPDATE actions.
            updating: Whether the rows' referenced keys change (ON UPDATE) rather than the
                rows go (ON DELETE).

        Returns:
            The keys of the rows of ``table`` that were locked: a list of them, or a select of
            a temporary table (many of them), for ``key IN (...)``; None when no audited row
            can be reached. A statement limited to them leaves alone a row that matches
            ``where`` only after the read, whose dependents were not read.
        """
        if not _edges_of(table, by_orm, updating):
            return None
        table = table._deannotate()
        connection = session.connection()
        keys = self._lock_keys(connection, table, where, params)
        pk = list(table.primary_key)
        locked = (pk[0] if len(pk) == 1 else sa.tuple_(*pk)).in_(keys)
        # (table, its rows reached, depth, the columns of them changed: None for any)
        pending: list[tuple[sa.Table, Any, int, Any]] = [(table, locked, 0, None)]
        while pending:
            parent, condition, depth, changed = pending.pop()
            for edge in _edges_of(parent, by_orm, updating):
                if changed is not None and changed.isdisjoint(edge.remote):
                    continue  # an ON UPDATE action reached the rows: not the columns it follows
                # never correlated: the table written may be the one read (a tree)
                referenced = sa.select(*edge.remote).correlate(None)
                if condition is not None:
                    referenced = referenced.where(condition)
                local = edge.local[0] if len(edge.local) == 1 else sa.tuple_(*edge.local)
                reached = local.in_(referenced)
                if edge.config is not None:
                    # rows of the table written that the write matches itself (a tree) are
                    # recorded by it: read here too, they were recorded twice
                    own = sa.and_(reached, ~locked) if edge.table is table else reached
                    found = self._read(connection, edge, own, skip)
                    if not found:
                        continue  # no row reached: nothing cascades further from here
                if edge.cascades and depth + 1 < MAX_DEPTH:
                    if edge.config is None:  # read above, and locked, when audited
                        lock = sa.select(sa.literal(1)).select_from(edge.table).where(reached)
                        inner = lock.with_for_update(of=edge.table).subquery()
                        counted = sa.select(sa.func.count()).select_from(inner)
                        connection.execute(counted, execution_options=TENANT_CHECKED)
                    changes = frozenset(edge.local) if updating else None
                    pending.append((edge.table, reached, depth + 1, changes))
        return keys

    def _lock_keys(
        self, connection: Any, table: sa.Table, where: Any, params: Mapping[str, Any] | None
    ) -> Any:
        """The keys of the rows of ``table`` matching ``where``, locked (``FOR UPDATE``, which
        makes a transaction inserting a row that references one wait): an IN list, or a select
        of a temporary table for more than `IN_CHUNK`."""
        pk = list(table.primary_key)
        query = sa.select(*pk).correlate(None)
        query = query.where(where) if where is not None else query.select_from(table)
        query = query.with_for_update(of=table)
        bound = dict(params or {})
        first = connection.execute(
            query.limit(IN_CHUNK + 1), bound, execution_options=TENANT_CHECKED
        ).all()
        if len(first) <= IN_CHUNK:
            return [r[0] if len(pk) == 1 else tuple(r) for r in first]
        keys = temporary_table(connection, [(c.name, c.type) for c in pk])
        copy = keys.insert().from_select([c.name for c in pk], query)
        connection.execute(copy, bound, execution_options=TENANT_CHECKED)
        self._temporary.append(keys)
        return sa.select(*keys.c)

    def _read(
        self,
        connection: Any,
        edge: _Edge,
        reached: Any,
        skip: Collection[tuple[sa.Table, tuple[Any, ...]]],
    ) -> bool:
        config = edge.config
        assert config is not None
        statement = config.select().select_from(edge.table).where(reached)
        statement = statement.with_for_update(of=edge.table)
        found = connection.execute(statement, execution_options=TENANT_CHECKED)
        rows = found.mappings().all()
        changed = [r for r in rows if (edge.table, config.key_of(r)) not in skip]
        if changed and edge.moves_key:
            # found again by its key after the write, such a row would be found under neither
            # key, and recorded as deleted: refused, or (inside unaudited()) not recorded
            if self._refusing:
                raise UnauditedWriteError(
                    f"this write changes keys that {edge.table.fullname}, the table of an "
                    "audited model, holds in its primary key (an ON UPDATE action of its "
                    "foreign key), and its rows cannot be followed: write it inside "
                    "dalkit.audit.unaudited()"
                )
            changed = []
        _, kept = self._before.setdefault(id(config), (config, {}))
        for found in changed:
            kept.setdefault(config.key_of(found), dict(found))
        return bool(rows)

    def drop_when_recorded(self, table: sa.Table) -> None:
        """Drop the temporary ``table`` once the rows are recorded.

        Args:
            table: A temporary table the write uses.
        """
        self._temporary.append(table)

    def record(self, session: Session) -> None:
        """Log what became of the rows read: deletes for those gone, updates for those changed."""
        for config, rows in self._before.values():
            record_since(session, config, rows, deleting=None)
        for keys in self._temporary:
            keys.drop(session.connection())


def _edges_of(table: sa.Table, by_orm: bool, updating: bool) -> tuple[_Edge, ...]:
    # an ORM statement's table is annotated: equal to the table as a key, yet no foreign key
    # refers to it; found for it, none would have been found (and kept for the table too)
    table = table._deannotate()
    # a model audited later can add edges
    cache_key = (table, audited_generation(), by_orm, updating)
    known = _edges.get(cache_key)
    if known is None:
        known = _edges[cache_key] = tuple(_find_edges(table, frozenset({table}), by_orm, updating))
    return known


def _find_edges(
    table: sa.Table, seen: frozenset[sa.Table], by_orm: bool, updating: bool
) -> list[_Edge]:
    """The foreign keys to ``table`` that lead to an audited model's rows."""
    edges = []
    for other in table.metadata.tables.values():
        for constraint in other.foreign_key_constraints:
            if constraint.referred_table is not table:
                continue
            action = ((constraint.onupdate if updating else constraint.ondelete) or "").upper()
            # an ON UPDATE action writes the referencing columns: an UPDATE of the rows, which
            # sets off the ON UPDATE actions of the foreign keys referencing them in turn
            cascades = action in _ACTING if updating else action == "CASCADE"
            config = table_audit(other)
            if config is not None and not by_orm and action not in _ACTING:
                config = None  # the write fails while such rows reference it: none changes
            local = tuple(constraint.columns)
            remote = tuple(element.column for element in constraint.elements)
            if config is None and not (
                cascades
                and other not in seen
                and any(
                    not updating or not set(local).isdisjoint(further.remote)
                    for further in _find_edges(other, seen | {other}, by_orm, updating)
                )
            ):
                continue
            moves_key = updating and not set(local).isdisjoint(other.primary_key)
            edges.append(_Edge(other, config, local, remote, cascades, moves_key))
    return edges
