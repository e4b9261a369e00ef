"""Domain events and the transactional outbox: events and the in-process bus, outbox messages
and event types, the relay, the inbox, and publishers (event bus, Redis Streams)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dalkit.outbox.events import DomainEvent, EventBus, HasEvents
from dalkit.outbox.inbox import Inbox
from dalkit.outbox.messages import (
    EventTypeRegistry,
    OutboxMessage,
    OutboxStatus,
    RelayBackoff,
    event_type,
    registry,
)
from dalkit.outbox.publishers import (
    AsyncEventBusPublisher,
    AsyncPublisher,
    AsyncRedisStreamPublisher,
    EventBusPublisher,
    Publisher,
    RedisStreamPublisher,
)
from dalkit.outbox.relay import OutboxRelay
from dalkit.outbox.uncollected import UncollectedEventsError

if TYPE_CHECKING:
    from dalkit.outbox.inbox_async import AsyncInbox
    from dalkit.outbox.relay_async import AsyncOutboxRelay


# the async classes need greenlet (the async extras): imported on first use
_ASYNC = {
    "AsyncInbox": "dalkit.outbox.inbox_async",
    "AsyncOutboxRelay": "dalkit.outbox.relay_async",
}


def __getattr__(name: str) -> Any:
    module = _ASYNC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncEventBusPublisher",
    "AsyncInbox",
    "AsyncOutboxRelay",
    "AsyncPublisher",
    "AsyncRedisStreamPublisher",
    "DomainEvent",
    "EventBus",
    "EventBusPublisher",
    "EventTypeRegistry",
    "HasEvents",
    "Inbox",
    "OutboxMessage",
    "OutboxRelay",
    "OutboxStatus",
    "Publisher",
    "RedisStreamPublisher",
    "RelayBackoff",
    "UncollectedEventsError",
    "event_type",
    "registry",
]
