"""Rows of audited models that a DELETE, or an UPDATE of a referenced key, changes through their
foreign keys, which no statement of the write names: ``ON DELETE`` / ``ON UPDATE`` actions
(``CASCADE``, ``SET NULL``, ``SET DEFAULT``) applied by the database, and the ORM nulling the
children of a deleted parent (a relationship without a delete cascade). They are read before
the write (`Dependents.add`) and recorded after it (`Dependents.record`): the rows gone as
deletes, the rows changed as updates. An ``ON UPDATE CASCADE`` is followed one level: the
new key reaches the children's foreign key, which other tables rarely reference in turn.

Found from the metadata of the table written: each audited table with a foreign key to it,
and, through ``ON DELETE CASCADE``, the tables whose rows that deletion removes in turn (an
unaudited table in the middle of a chain, or the table itself for a tree, included, down to
`MAX_DEPTH` levels). A foreign key with no ``ON DELETE`` action makes the DELETE fail while
rows reference it: reading them then finds nothing to record. Either way the query is paid only
when a table that an audited one references loses rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit.audit.records import record_since
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
    cascades: bool  # ON DELETE CASCADE: the rows are deleted, their own dependents reached


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


def cascade_parents(*, updating: bool = False) -> list[sa.Table]:
    """The tables whose DELETE (``updating``: UPDATE) can change rows of an audited model
    (for raw SQL)."""
    generation = audited_generation()
    known = _parents.get(updating)
    if known is None or known[0] != generation:
        metadatas = {table.metadata for table in audited_tables()}
        found = [
            table
            for metadata in metadatas
            for table in metadata.tables.values()
            if has_audited_dependents(table, updating=updating)
        ]
        known = _parents[updating] = (generation, found)
    return list(known[1])


_parents: dict[bool, tuple[int, list[sa.Table]]] = {}  # updating -> (generation, the tables)


class Dependents:
    """The audited rows that the DELETEs of one write may change, read before it."""

    def __init__(self) -> None:
        # per audited model: its rows by primary key, as they were
        self._before: dict[int, tuple[ModelAudit, dict[tuple[Any, ...], dict[str, Any]]]] = {}

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
    ) -> None:
        """Read the audited rows that reference the rows of ``table`` matching ``where``.

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
        """
        connection = session.connection()
        pending: list[tuple[sa.Table, Any, int]] = [(table, where, 0)]
        while pending:
            parent, condition, depth = pending.pop()
            for edge in _edges_of(parent, by_orm, updating):
                # never correlated: the table written may be the one read (a tree)
                referenced = sa.select(*edge.remote).correlate(None)
                if condition is not None:
                    referenced = referenced.where(condition)
                local = edge.local[0] if len(edge.local) == 1 else sa.tuple_(*edge.local)
                reached = local.in_(referenced)
                if edge.config is not None:
                    found = self._read(connection, edge, reached, params, skip)
                    if not found:
                        continue  # no row reached: nothing cascades further from here
                if edge.cascades and depth + 1 < MAX_DEPTH:
                    pending.append((edge.table, reached, depth + 1))

    def _read(
        self,
        connection: Any,
        edge: _Edge,
        reached: Any,
        params: Mapping[str, Any] | None,
        skip: Collection[tuple[sa.Table, tuple[Any, ...]]],
    ) -> bool:
        config = edge.config
        assert config is not None
        statement = config.select().select_from(edge.table).where(reached)
        found = connection.execute(statement, dict(params or {}), execution_options=TENANT_CHECKED)
        rows = found.mappings().all()
        _, kept = self._before.setdefault(id(config), (config, {}))
        for found in rows:
            key = config.key_of(found)
            if (edge.table, key) not in skip:
                kept.setdefault(key, dict(found))
        return bool(rows)

    def record(self, session: Session) -> None:
        """Log what became of the rows read: deletes for those gone, updates for those changed."""
        for config, rows in self._before.values():
            record_since(session, config, rows, deleting=None)


def _edges_of(table: sa.Table, by_orm: bool, updating: bool) -> tuple[_Edge, ...]:
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
            cascades = not updating and action == "CASCADE"
            config = table_audit(other)
            if config is not None and not by_orm and action not in _ACTING:
                config = None  # the write fails while such rows reference it: none changes
            if config is None and not (
                cascades
                and other not in seen
                and _find_edges(other, seen | {other}, by_orm, updating)
            ):
                continue
            local = tuple(constraint.columns)
            remote = tuple(element.column for element in constraint.elements)
            edges.append(_Edge(other, config, local, remote, cascades))
    return edges
