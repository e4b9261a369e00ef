"""The ``dalkit_outbox`` rows a unit of work writes for its events, refused at the commit (with
nothing written) when an event's id or time is not one the table keeps the same on every
database: PostgreSQL would refuse the row only at the INSERT, SQLite keep it whole; and the
event id a ``dalkit_inbox`` row records, fitted to its column.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from dalkit.errors import OutboxError
from dalkit.outbox.events import DomainEvent
from dalkit.outbox.messages import EventTypeRegistry
from dalkit.tables import inbox, outbox

__all__ = ["EVENT_ID_MAX", "outbox_rows", "recorded_id"]

#: the longest event id the outbox (and the inbox) keeps: its column's width
EVENT_ID_MAX: int = outbox.c.event_id.type.length  # type: ignore[attr-defined]
_INBOX_ID_MAX: int = inbox.c.event_id.type.length  # type: ignore[attr-defined]


def outbox_rows(
    entries: Iterable[tuple[DomainEvent, tuple[str, str] | None]],
    types: EventTypeRegistry,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The ``dalkit_outbox`` rows for events with their aggregates (type, id), in order.

    Raises:
        OutboxError: For an event whose id is longer than `EVENT_ID_MAX` characters, or
            whose ``occurred_at`` is not a timezone-aware datetime.
    """
    rows = []
    for event, aggregate in entries:
        _check_stored_as_given(event)
        name, version, payload = types.dump(event)
        aggregate_type, aggregate_id = aggregate if aggregate is not None else (None, None)
        rows.append(
            {
                "event_id": event.event_id,
                "event_type": name,
                "event_version": version,
                # events without an aggregate are ordered by nothing: each is its own stream
                "aggregate_key": (
                    f"{aggregate_type}:{aggregate_id}" if aggregate else f"event:{event.event_id}"
                ),
                "aggregate_type": aggregate_type,
                "aggregate_id": aggregate_id,
                "payload": payload,
                "occurred_at": event.occurred_at,
                "created_at": now,
                "attempts": 0,
                "next_attempt_at": now,
            }
        )
    return rows


def _check_stored_as_given(event: DomainEvent) -> None:
    """Refuse an id the outbox would cut, change or refuse, and a time with no zone."""
    kind = type(event).__name__
    length = len(str(event.event_id))
    if length > EVENT_ID_MAX:
        raise OutboxError(
            f"{kind}.event_id is {length:,} characters long; the outbox keeps at most "
            f"{EVENT_ID_MAX}"
        )
    occurred = event.occurred_at
    if not isinstance(occurred, dt.datetime) or occurred.tzinfo is None:
        what = "naive" if isinstance(occurred, dt.datetime) else f"a {type(occurred).__name__}"
        raise OutboxError(
            f"{kind}.occurred_at is {what}; the outbox keeps timezone-aware datetimes "
            "(dt.datetime.now(dt.UTC))"
        )


def recorded_id(event_id: str) -> str:
    """The id the inbox records for ``event_id``: itself, or, for one longer than the inbox
    keeps, its beginning, ``~sha256:`` and the start of the SHA-256 of the whole: it fits on
    every database, and the same id always gives the same text (PostgreSQL refused the row,
    SQLite kept it whole).

    Args:
        event_id: The id of a delivered event, as the consumer got it.

    Returns:
        Text of at most the inbox's ``event_id`` width.
    """
    text = str(event_id)
    if len(text) <= _INBOX_ID_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text[:8]}~sha256:{digest[: _INBOX_ID_MAX - 16]}"
