"""Where an OutboxRelay sends messages: the `Publisher` protocols, the in-process
EventBus and Redis Streams (``XADD``). Importing this module never imports redis: the caller
hands in its own client.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any, Protocol

from dalkit.errors import ConfigurationError, PublishError
from dalkit.outbox.events import EventBus
from dalkit.outbox.messages import EventTypeRegistry, OutboxMessage, registry

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = [
    "AsyncEventBusPublisher",
    "AsyncPublisher",
    "AsyncRedisStreamPublisher",
    "EventBusPublisher",
    "Publisher",
    "check_publisher",
    "RedisStreamPublisher",
    "stream_fields",
]


class Publisher(Protocol):
    """Delivers one message, or raises; an OutboxRelay calls it inside its claiming
    transaction and retries a message whose publish raised. Delivery is at least once:
    consumers deduplicate by ``message.event_id`` (see [`Inbox`][dalkit.Inbox]).

    Each publish runs in a savepoint of the relay's transaction, which a ``db.transaction()``
    of the publisher's on the relay's database joins: what a failed publish wrote there is
    rolled back with it. A publisher that never writes through that database may say so with a
    class attribute ``shares_transaction = False``, and save the savepoint's round trips."""

    def publish(self, message: OutboxMessage) -> None:
        """Deliver ``message``, or raise so that the relay tries it again later.

        Args:
            message: The outbox message to deliver.
        """


class AsyncPublisher(Protocol):
    """`Publisher` for the AsyncOutboxRelay."""

    async def publish(self, message: OutboxMessage) -> None:
        """Deliver ``message``, or raise so that the relay tries it again later.

        Args:
            message: The outbox message to deliver.
        """


class EventBusPublisher:
    """Hands each message, read back as its registered event type, to an in-process EventBus;
    a handler that fails makes the publish fail, so the relay delivers the message again.

    The handlers run inside the relay's transaction (`shares_transaction`): what they write
    through the relay's database commits with the message marked sent, and what they wrote for
    a publish that failed is rolled back with it (the relay takes a savepoint per message).

    Args:
        bus: The event bus whose handlers receive the events.
        event_types: Where event classes are found by stored name and version (default: the
            registry `@event_type` fills).
    """

    #: the relay publishes each message in a savepoint of its transaction, which the handlers'
    #: own ``db.transaction()`` joins (as for any publisher that does not set it to False)
    shares_transaction = True

    def __init__(self, bus: EventBus, event_types: EventTypeRegistry = registry) -> None:
        self.bus = bus
        self.event_types = event_types

    def publish(self, message: OutboxMessage) -> None:
        """Dispatch the message's event to the bus's handlers.

        Args:
            message: The outbox message.

        Raises:
            PublishError: When a handler raised (the relay delivers the message again).
        """
        failures = self.bus.dispatch([self.event_types.load(message)])
        if failures:
            raise PublishError(_failed(message, failures[0].error, len(failures)))


class AsyncEventBusPublisher(EventBusPublisher):
    """`EventBusPublisher` for the AsyncOutboxRelay: async handlers are awaited."""

    async def publish(self, message: OutboxMessage) -> None:  # type: ignore[override]
        """Dispatch the message's event to the bus's handlers, awaiting async ones.

        Args:
            message: The outbox message.

        Raises:
            PublishError: When a handler raised (the relay delivers the message again).
        """
        failures = await self.bus.dispatch_async([self.event_types.load(message)])
        if failures:
            raise PublishError(_failed(message, failures[0].error, len(failures)))


def check_publisher(publisher: object, protocol: object, *, given: str = "the publisher") -> None:
    """Refuse, before a message is claimed, a publisher a relay could not deliver through: one
    without ``publish()``, an EventBus (its ``publish()`` takes events), and for the sync relay
    an async ``publish()``, which it would never await: every message would be marked sent
    without being delivered.

    Args:
        publisher: What the relay was given.
        protocol: `Publisher` for an OutboxRelay, `AsyncPublisher` for an AsyncOutboxRelay.
        given: How the error names it (the CLI names its ``--publisher`` option).

    Raises:
        ConfigurationError: ``publisher`` cannot publish outbox messages for that relay.
    """
    is_async = protocol is AsyncPublisher
    publish = getattr(publisher, "publish", None)
    if not callable(publish):
        raise ConfigurationError(
            f"{given} is an instance of {type(publisher).__qualname__}, which has no "
            "publish() method"
        )
    if isinstance(publisher, EventBus):
        wrapper = AsyncEventBusPublisher if is_async else EventBusPublisher
        raise ConfigurationError(
            f"{given} is an EventBus, whose publish() takes events, not outbox messages: "
            f"wrap it in {wrapper.__name__}(bus)"
        )
    if not is_async and inspect.iscoroutinefunction(publish):
        raise ConfigurationError(
            f"{given} is an async publisher; OutboxRelay calls publish() without awaiting it: "
            "give it a sync one, or use AsyncOutboxRelay"
        )


def _failed(message: OutboxMessage, error: BaseException, count: int) -> str:
    return f"{count} handler(s) failed for event {message.event_id}; first: {error!r}"


def stream_fields(message: OutboxMessage) -> dict[str, str]:
    """The fields of a Redis Streams entry for ``message``: strings, the payload as JSON."""
    fields = message.as_json()
    fields["payload"] = json.dumps(fields["payload"], separators=(",", ":"))
    return {key: "" if value is None else str(value) for key, value in fields.items()}


class RedisStreamPublisher:
    """``XADD`` to one stream per message; ``maxlen`` trims the stream approximately.

    Args:
        client: The Redis client (the caller's: importing dalkit never imports redis).
        stream: The stream's key.
        maxlen: Trim the stream to about this many entries (``None``: never).
    """

    #: it writes nothing through the relay's database: no savepoint per message
    shares_transaction = False

    def __init__(
        self, client: redis.Redis, stream: str = "dalkit:events", maxlen: int | None = None
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    def publish(self, message: OutboxMessage) -> None:
        """Add ``message`` to the stream: one entry, its fields as strings.

        Args:
            message: The outbox message.
        """
        fields: dict[Any, Any] = stream_fields(message)
        self.client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)


class AsyncRedisStreamPublisher:
    """`RedisStreamPublisher` with a ``redis.asyncio`` client.

    Args:
        client: The Redis client (the caller's: importing dalkit never imports redis).
        stream: The stream's key.
        maxlen: Trim the stream to about this many entries (``None``: never).
    """

    #: it writes nothing through the relay's database: no savepoint per message
    shares_transaction = False

    def __init__(
        self,
        client: redis.asyncio.Redis,
        stream: str = "dalkit:events",
        maxlen: int | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    async def publish(self, message: OutboxMessage) -> None:
        """Add ``message`` to the stream: one entry, its fields as strings.

        Args:
            message: The outbox message.
        """
        fields: dict[Any, Any] = stream_fields(message)
        await self.client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
