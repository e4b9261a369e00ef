"""dalkit's own tables (audit log, outbox, inbox) on `metadata`, so that users' migrations
can include them; portable types only (JSON, UTC timestamps, string ids), for SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "UTCDateTime",
    "audit_log",
    "create_tables",
    "create_tables_async",
    "inbox",
    "metadata",
    "outbox",
]

metadata = sa.MetaData()
"""The MetaData holding dalkit's tables (audit log, outbox, inbox): add it to Alembic's
``target_metadata`` list; ``db.create_all()`` creates them with yours."""

# SQLite has no BIGSERIAL: only an INTEGER PRIMARY KEY is its autoincrementing rowid
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and read back timezone-aware on every backend (SQLite keeps no
    zone, so a naive value read from it is UTC by construction)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"dalkit stores aware datetimes only, got naive {value!r}")
        value = value.astimezone(dt.UTC)
        # SQLite compares the stored text: one fixed format keeps text order = time order
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


audit_log = sa.Table(
    "dalkit_audit_log",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("entity_type", sa.String(200), nullable=False),
    sa.Column("entity_id", sa.String(200), nullable=False),
    sa.Column("action", sa.String(10), nullable=False),
    sa.Column("changes", sa.JSON(), nullable=False),
    sa.Column("actor_id", sa.String(200), nullable=True),
    sa.Column("request_id", sa.String(200), nullable=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "action IN ('create', 'update', 'delete')", name="ck_dalkit_audit_log_action"
    ),
    sa.Index("ix_dalkit_audit_log_entity", "entity_type", "entity_id", "id"),
    sa.Index("ix_dalkit_audit_log_actor", "actor_id", "id"),
)

_PENDING = sa.text("sent_at IS NULL")

outbox = sa.Table(
    "dalkit_outbox",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("event_version", sa.Integer(), nullable=False),
    # events of one aggregate key are published in id order; "Type:id", or the event's own id
    sa.Column("aggregate_key", sa.String(400), nullable=False),
    sa.Column("aggregate_type", sa.String(200), nullable=True),
    sa.Column("aggregate_id", sa.String(200), nullable=True),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    # partial indexes: sent rows pile up until pruned and must not slow down claiming
    sa.Index("ix_dalkit_outbox_pending", "id", postgresql_where=_PENDING, sqlite_where=_PENDING),
    sa.Index(
        "ix_dalkit_outbox_aggregate",
        "aggregate_key",
        "id",
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    ),
    sa.Index("ix_dalkit_outbox_sent_at", "sent_at"),
)

inbox = sa.Table(
    "dalkit_inbox",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("processed_at", UTCDateTime(), nullable=False),
)


def create_tables(connection: Connection, metadatas: Sequence[sa.MetaData]) -> None:
    """Create the tables of ``metadatas`` and dalkit's own that do not exist yet."""
    for each in dict.fromkeys((*metadatas, metadata)):
        each.create_all(connection)


async def create_tables_async(
    connection: AsyncConnection, metadatas: Sequence[sa.MetaData]
) -> None:
    """`create_tables()` on an async connection."""
    await connection.run_sync(create_tables, metadatas)
