"""The repositories' driver-level bulk writes (``bulk_update``, ``bulk_insert`` through COPY or
``executemany``), which SQLAlchemy's events never see: each chunk is wrapped in a recorder that
reads its rows before and after it is written, in the chunk's savepoint, so memory holds one
chunk's values. The same guard refuses a bulk_update touching a soft-deleted row or a row of
another tenant.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit.audit.cascades import Dependents, has_audited_dependents
from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.guard import recorded, unrecorded_allowed
from dalkit.audit.locking import add_by_keys
from dalkit.audit.records import full, record_since, row, rows_by, rows_by_key, write
from dalkit.audit.registry import ModelAudit, model_audit
from dalkit.query.soft_delete import is_soft_deletable, refuse_deleted
from dalkit.query.tenant import check_keys, check_tenant_rows, current_tenant, is_tenant_scoped
from dalkit.query.tenant_guard import TENANT_CHECKED

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

__all__ = [
    "BulkInsertAudit",
    "BulkUpdateAudit",
    "ChunkAudit",
    "Keep",
    "bulk_insert_audit",
    "bulk_update_audit",
    "recording_bulk_insert",
    "recording_bulk_insert_async",
    "recording_bulk_update",
    "recording_bulk_update_async",
]


class ChunkAudit(Protocol):
    """What a bulk write calls around each chunk: ``read_before`` before writing it (it may
    refuse the chunk), ``kept`` for the positions of the chunk's rows to write (None: all),
    ``record`` after, with what ``read_before`` returned."""

    def read_before(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> Any: ...

    def kept(self, before: Any, rows: Sequence[Mapping[str, Any]]) -> list[int] | None: ...

    def record(self, session: Session, before: Any) -> None: ...


class Keep(Protocol):
    """What a recorder gives the block: the chunk's rows (in any form, in the chunk's order)
    that it is to write."""

    def __call__(self, part: Sequence[T]) -> Sequence[T]: ...


def _keeping(positions: list[int] | None) -> Keep:
    def keep(part: Sequence[T]) -> Sequence[T]:
        return part if positions is None else [part[i] for i in positions]

    return keep


@dataclasses.dataclass(frozen=True, slots=True)
class BulkUpdateAudit:
    """``bulk_update`` of one model that is audited or soft-deletable: the chunk's rows are read
    by primary key before it is written (a soft-deleted one refuses the chunk) and, when
    audited, after it, and the log rows go into the chunk's savepoint with it."""

    config: ModelAudit | None
    model: type[Any]
    soft_delete: bool
    tenant_scoped: bool = False

    def read_before(
        self, session: Session, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[tuple[Any, ...], dict[str, Any]], Dependents | None]:
        keys = [tuple(r[k] for k in self._primary_key()) for r in rows]
        if self.tenant_scoped:
            current = current_tenant()
            if current is not None:
                check_tenant_rows(current, rows)
            check_keys(session, self.model, keys)
        if self.config is not None:
            before = rows_by_key(session, self.config, keys, locked=True)
            if self.soft_delete:
                refuse_deleted(self.config.name, before.values(), "bulk_update")
            return before, self._dependents(session, keys)
        if not self.soft_delete:
            return {}, None
        deleted = self.model.deleted_at
        pk = [c for c in sa.inspect(self.model).primary_key]
        target = pk[0] if len(pk) == 1 else sa.tuple_(*pk)
        values = [k[0] for k in keys] if len(pk) == 1 else keys
        query = sa.select(deleted.label("deleted_at")).where(
            target.in_(values), deleted.is_not(None)
        )
        refuse_deleted(
            self.model.__name__,
            session.connection()
            .execute(query.limit(1), execution_options=TENANT_CHECKED)
            .mappings(),
            "bulk_update",
        )
        return {}, None

    def _dependents(self, session: Session, keys: list[tuple[Any, ...]]) -> Dependents | None:
        """The audited rows the chunk's ON UPDATE actions may change (a code they follow),
        locked and read before it is written; None when none can be reached."""
        table = sa.inspect(self.model).local_table
        if not has_audited_dependents(table, updating=True):
            return None
        dependents = Dependents(refusing=not unrecorded_allowed())
        add_by_keys(dependents, session, table, keys, updating=True)
        return dependents

    def kept(
        self, before: tuple[Mapping[tuple[Any, ...], Any], Any], rows: Sequence[Mapping[str, Any]]
    ) -> list[int] | None:
        """The rows whose before-image was read: an audited row that the locked read did not
        find (absent, or another tenant's) is not written. Written by key, it could match a
        row that another transaction inserted and committed after the read (READ COMMITTED),
        whose old values nothing read: it is skipped, as if the chunk had been written at the
        read (a key matching no row updates nothing, and is not counted)."""
        if self.config is None:
            return None
        names = self._primary_key()
        found = [i for i, r in enumerate(rows) if tuple(r[k] for k in names) in before[0]]
        return None if len(found) == len(rows) else found

    def record(
        self,
        session: Session,
        before: tuple[Mapping[tuple[Any, ...], Mapping[str, Any]], Dependents | None],
    ) -> None:
        rows, dependents = before
        if self.config is not None:
            record_since(session, self.config, rows)
        if dependents is not None:
            dependents.record(session)

    def _primary_key(self) -> tuple[str, ...]:
        mapper = sa.inspect(self.model)
        return tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)


def bulk_update_audit(model: type[Any]) -> BulkUpdateAudit | None:
    """How to guard and record ``bulk_update`` of ``model``; None when it is neither audited
    nor soft-deletable (then the bulk update runs no query beyond its own)."""
    config = model_audit(model)
    soft_delete = is_soft_deletable(model)
    scoped = is_tenant_scoped(model)
    if config is None and not soft_delete and not scoped:
        return None
    return BulkUpdateAudit(config, model, soft_delete, scoped)


@dataclasses.dataclass(frozen=True, slots=True)
class BulkInsertAudit:
    """``bulk_insert`` of an audited model: after each chunk its rows are read back by ``lookup``
    (the primary key, or a unique key every row carries) and logged as creates."""

    config: ModelAudit
    lookup: tuple[str, ...]

    def read_before(
        self, session: Session, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        return [tuple(r[n] for n in self.lookup) for r in rows]

    def kept(self, before: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        return None  # every row is new: none was there to read

    def record(self, session: Session, before: Sequence[tuple[Any, ...]]) -> None:
        after = rows_by(session, self.config, self.lookup, before)
        write(
            session,
            [
                row(self.config, "create", self.config.key_of(v), full(self.config, v))
                for v in after.values()
            ],
        )


def bulk_insert_audit(model: type[Any], first_row: Mapping[str, Any]) -> BulkInsertAudit | None:
    """How to record ``bulk_insert`` of ``model`` given the keys of its rows (those of the first
    one); None when it is not audited. Raises UnauditedWriteError, before anything is written,
    when the rows carry neither the primary key nor a unique key to find them again."""
    config = model_audit(model)
    if config is None:
        return None
    mapper = sa.inspect(model)
    table = mapper.local_table
    by_column = {column: key for key, column in config.fields}
    candidates = [config.primary_key]
    for constraint in getattr(table, "constraints", ()):
        if isinstance(constraint, sa.UniqueConstraint):
            candidates.append(tuple(by_column.get(c, "") for c in constraint.columns))
    for index in getattr(table, "indexes", ()):
        if index.unique and len(index.expressions) == len(index.columns):
            candidates.append(tuple(by_column.get(c, "") for c in index.columns))
    candidates.extend((key,) for key, column in config.fields if getattr(column, "unique", False))
    for candidate in candidates:
        if candidate and all(name in first_row for name in candidate):
            return BulkInsertAudit(config, candidate)
    raise UnauditedWriteError(
        f"bulk_insert of {model.__name__} (audited) needs the primary key or a unique key in "
        "every row, to record the rows it creates"
    )


@contextlib.contextmanager
def recording_bulk_update(
    session: Session, audit: ChunkAudit | None, rows: Sequence[Mapping[str, Any]]
) -> Iterator[Keep]:
    """Guard and log the chunk the block writes (rows keyed by field name), unless it raises;
    does nothing when ``audit`` is None. Serves bulk_insert's `BulkInsertAudit` too.

    Args:
        session: The session whose transaction writes the chunk.
        audit: How to guard and record the chunk (None: not at all).
        rows: The chunk's rows.

    Returns:
        Which of the chunk's rows the block is to write (`BulkUpdateAudit.kept`), in any form.
    """
    if audit is None:
        yield _keeping(None)
        return
    before = audit.read_before(session, rows)
    with recorded():  # the block's statements pass the guard: they are recorded here
        yield _keeping(audit.kept(before, rows))
    audit.record(session, before)


@contextlib.asynccontextmanager
async def recording_bulk_update_async(
    session: AsyncSession, audit: ChunkAudit | None, rows: Sequence[Mapping[str, Any]]
) -> AsyncIterator[Keep]:
    """`recording_bulk_update()` for an AsyncSession.

    Args:
        session: The session whose transaction writes the chunk.
        audit: How to guard and record the chunk (None: not at all).
        rows: The chunk's rows.

    Returns:
        Which of the chunk's rows the block is to write, in any form.
    """
    if audit is None:
        yield _keeping(None)
        return
    before = await session.run_sync(audit.read_before, rows)
    with recorded():
        yield _keeping(audit.kept(before, rows))
    await session.run_sync(audit.record, before)


#: the same recorders, named for bulk_insert
recording_bulk_insert = recording_bulk_update
recording_bulk_insert_async = recording_bulk_update_async
