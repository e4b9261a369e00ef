"""Domain events and the transactional outbox: events and the in-process bus, outbox messages
and event types, the relay, the inbox, and publishers (event bus, Redis Streams)."""

from __future__ import annotations

from dalkit.outbox.events import DomainEvent, EventBus, HasEvents
from dalkit.outbox.inbox import Inbox
from dalkit.outbox.inbox_async import AsyncInbox
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
from dalkit.outbox.relay_async import AsyncOutboxRelay

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
    "event_type",
    "registry",
]
