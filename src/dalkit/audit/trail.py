"""Reading the audit trail back: `AuditEntry`, the history of one entity and the changes
of one actor, as statements (to compose) and as sync and async calls. Re-exported by
`dalkit.audit`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from dalkit.audit.registry import entity_key, entity_type_name
from dalkit.audit.tenants import Visibility
from dalkit.tables import audit_log

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = [
    "AuditEntry",
    "changes_by",
    "changes_by_async",
    "changes_by_query",
    "history",
    "history_async",
    "history_query",
]


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log.

    Attributes:
        id: The row's id, increasing with time.
        entity_type: The model's name in the log.
        entity_id: The entity's primary key as text (a JSON list when composite).
        action: ``"create"``, ``"update"`` or ``"delete"``.
        changes: ``{field: {"old": ..., "new": ...}}`` for each recorded field that changed
            (a redacted field shows ``"[redacted]"``).
        actor_id: Who made the change (`actor()`), if known.
        request_id: The request it was made in, if known.
        occurred_at: When the transaction wrote it (UTC).
    """

    id: int
    entity_type: str
    entity_id: str
    action: str
    changes: dict[str, Any]
    actor_id: str | None
    request_id: str | None
    occurred_at: dt.datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> AuditEntry:
        """An entry from a row of ``dalkit_audit_log``.

        Args:
            row: The row's mapping, as `history_query()` selects it.

        Returns:
            The entry.
        """
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


def history_query(entity_type: type[Any] | str, entity_id: Any) -> sa.Select[Any]:
    """The log of one entity, oldest first, as a statement to run or extend.

    Args:
        entity_type: The audited model, or the name the log records for it.
        entity_id: The entity's primary key (a tuple when composite).

    Returns:
        The SELECT of ``dalkit_audit_log`` rows.
    """
    key = entity_id if isinstance(entity_id, tuple) else (entity_id,)
    return (
        sa.select(audit_log)
        .where(
            audit_log.c.entity_type == entity_type_name(entity_type),
            audit_log.c.entity_id == entity_key(key),
        )
        .order_by(audit_log.c.occurred_at, audit_log.c.id)
    )


def changes_by_query(actor_id: object, since: dt.datetime | None = None) -> sa.Select[Any]:
    """What ``actor_id`` changed, oldest first, as a statement to run or extend.

    Args:
        actor_id: Who made the changes.
        since: Only changes from this time on.

    Returns:
        The SELECT of ``dalkit_audit_log`` rows.
    """
    statement = sa.select(audit_log).where(audit_log.c.actor_id == str(actor_id))
    if since is not None:
        statement = statement.where(audit_log.c.occurred_at >= since)
    return statement.order_by(audit_log.c.occurred_at, audit_log.c.id)


def history(session: Session, entity_type: type[Any] | str, entity_id: Any) -> list[AuditEntry]:
    """The audit trail of one entity, in time order.

    Args:
        session: A session of the database holding the log.
        entity_type: The audited model, or the name the log records for it.
        entity_id: The entity's primary key (a tuple when composite).

    Returns:
        The entries.
    """
    rows = session.execute(history_query(entity_type, entity_id)).mappings()
    return _visible(session, [AuditEntry.from_row(row) for row in rows])


async def history_async(
    session: AsyncSession, entity_type: type[Any] | str, entity_id: Any
) -> list[AuditEntry]:
    """`history()` on an AsyncSession.

    Args:
        session: A session of the database holding the log.
        entity_type: The audited model, or the name the log records for it.
        entity_id: The entity's primary key (a tuple when composite).

    Returns:
        The entries, in time order.
    """
    rows = (await session.execute(history_query(entity_type, entity_id))).mappings()
    return await _visible_async(session, [AuditEntry.from_row(row) for row in rows])


def changes_by(
    session: Session, actor_id: object, since: dt.datetime | None = None
) -> list[AuditEntry]:
    """Every change recorded for ``actor_id``, in time order.

    Args:
        session: A session of the database holding the log.
        actor_id: Who made the changes.
        since: Only changes from this time on.

    Returns:
        The entries.
    """
    rows = session.execute(changes_by_query(actor_id, since)).mappings()
    return _visible(session, [AuditEntry.from_row(row) for row in rows])


async def changes_by_async(
    session: AsyncSession, actor_id: object, since: dt.datetime | None = None
) -> list[AuditEntry]:
    """`changes_by()` on an AsyncSession.

    Args:
        session: A session of the database holding the log.
        actor_id: Who made the changes.
        since: Only changes from this time on.

    Returns:
        The entries, in time order.
    """
    rows = (await session.execute(changes_by_query(actor_id, since))).mappings()
    return await _visible_async(session, [AuditEntry.from_row(row) for row in rows])


def _visible(session: Session, entries: list[AuditEntry]) -> list[AuditEntry]:
    """The ``entries`` the context's tenant may see (see `dalkit.audit.tenants`)."""
    visibility = Visibility(entries)
    creations = visibility.creations()
    if creations is not None:
        visibility.created(session.execute(creations))
    for model, query in visibility.queries():
        visibility.found(model, session.execute(query).scalars())
    return visibility.visible()


async def _visible_async(session: AsyncSession, entries: list[AuditEntry]) -> list[AuditEntry]:
    visibility = Visibility(entries)
    creations = visibility.creations()
    if creations is not None:
        visibility.created(await session.execute(creations))
    for model, query in visibility.queries():
        visibility.found(model, (await session.execute(query)).scalars())
    return visibility.visible()
