"""The transactional outbox: registered event types with versions, events to and from JSON, the
rows a unit of work writes in its own transaction, and the relay's statements and backoff. No
I/O: `dalkit.outbox.relay_async` and the units of work run what is built here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from dalkit._codec import CodecError, field_hints, jsonable, restore
from dalkit.errors import ConfigurationError, OutboxError
from dalkit.outbox.events import DomainEvent
from dalkit.tables import outbox
from dalkit.transaction.retry import backoff_delay, check_backoff

__all__ = [
    "EventTypeRegistry",
    "OutboxMessage",
    "OutboxStatus",
    "RelayBackoff",
    "event_type",
    "registry",
]

E = TypeVar("E", bound=type[DomainEvent])


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event as the relay hands it to a publisher.

    Attributes:
        id: The outbox row's id: messages are published in id order.
        event_id: The event's unique id: consumers deduplicate by it.
        event_type: The event's registered name.
        event_version: The version of the event type's payload.
        aggregate_type: The type of the aggregate the event belongs to, if any.
        aggregate_id: That aggregate's id, if any.
        aggregate_key: The ordering key: events with one key are delivered in order.
        payload: The event's fields as JSON values.
        occurred_at: When the event happened (UTC).
        attempts: How many publishes of it failed so far.
    """

    id: int
    event_id: str
    event_type: str
    event_version: int
    aggregate_type: str | None
    aggregate_id: str | None
    aggregate_key: str
    payload: dict[str, Any]
    occurred_at: dt.datetime
    attempts: int = 0

    def as_json(self) -> dict[str, Any]:
        """The message with every field as JSON-safe values (for brokers).

        Returns:
            The fields by name, with datetimes and the like as JSON strings.
        """
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


class EventTypeRegistry:
    """Event classes by (name, version): what the outbox may store, and how to read it back.

    Most code uses the module's `registry` through `@event_type`.
    """

    def __init__(self) -> None:
        self._by_class: dict[type[DomainEvent], tuple[str, int]] = {}
        self._by_name: dict[tuple[str, int], type[DomainEvent]] = {}

    def register(self, cls: type[DomainEvent], name: str | None = None, version: int = 1) -> None:
        """Let the outbox store events of ``cls`` under ``(name, version)``.

        Args:
            cls: A dataclass subclass of `DomainEvent`.
            name: The stored name (default: the class's name); keep it when renaming the class.
            version: The payload's version: register a changed class under a new one.

        Raises:
            ConfigurationError: For a class that is not a `DomainEvent` dataclass, or a name
                and version already taken by another class.
        """
        if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
            raise ConfigurationError(f"only DomainEvent subclasses can be registered, not {cls!r}")
        if not dataclasses.is_dataclass(cls):
            raise ConfigurationError(f"{cls.__name__} must be a dataclass to be serialised")
        key = (name or cls.__name__, int(version))
        taken = self._by_name.get(key)
        if taken is not None and taken is not cls:
            raise ConfigurationError(f"event type {key[0]} v{key[1]} is already {taken.__name__}")
        self._by_class[cls] = key
        self._by_name[key] = cls

    def name_of(self, cls: type[DomainEvent]) -> tuple[str, int]:
        """The stored name and version of an event class.

        Args:
            cls: A registered event class.

        Returns:
            ``(name, version)``.

        Raises:
            ConfigurationError: When ``cls`` is not registered.
        """
        try:
            return self._by_class[cls]
        except KeyError:
            raise ConfigurationError(
                f"{cls.__name__} is not a registered event type: decorate it with "
                "@dalkit.outbox.messages.event_type(...) so that the outbox can store it"
            ) from None

    def dump(self, event: DomainEvent) -> tuple[str, int, dict[str, Any]]:
        """What the outbox stores of ``event``.

        Args:
            event: An event of a registered class.

        Returns:
            ``(name, version, payload)``; the payload holds its fields as JSON.

        Raises:
            ConfigurationError: When the event's class is not registered.
            OutboxError: When a field holds a value JSON cannot carry and its type cannot read
                back from text (it would be stored as ``<Money object at 0x...>``).
        """
        name, version = self.name_of(type(event))
        payload = {}
        for field in dataclasses.fields(event):
            if field.name in ("event_id", "occurred_at"):
                continue
            try:
                payload[field.name] = jsonable(getattr(event, field.name), strict=True)
            except CodecError as exc:
                raise OutboxError(
                    f"{type(event).__name__}.{field.name} cannot be stored in the outbox: {exc}"
                ) from None
        return name, version, payload

    def load(self, message: OutboxMessage) -> DomainEvent:
        """The event a message carries, as an instance of its registered class.

        Args:
            message: A message from the outbox.

        Returns:
            The event, with its original ``event_id`` and ``occurred_at``.

        Raises:
            OutboxError: When no class is registered for it, or a field cannot be read back.
        """
        cls = self._by_name.get((message.event_type, message.event_version))
        if cls is None:
            raise OutboxError(
                f"no event type {message.event_type} v{message.event_version} is registered"
            )
        hints = field_hints(cls)
        values = {}
        for key, value in message.payload.items():
            try:
                values[key] = restore(value, hints.get(key, Any))
            except CodecError as exc:
                raise OutboxError(
                    f"{message.event_type} v{message.event_version} message {message.event_id}: "
                    f"{cls.__name__}.{key} cannot be read back: {exc}"
                ) from None
        return cls(event_id=message.event_id, occurred_at=message.occurred_at, **values)


registry = EventTypeRegistry()
"""The registry the units of work and relays use unless given another."""


def event_type(name: str | None = None, version: int = 1) -> Callable[[E], E]:
    """Class decorator registering an event type in `registry` for the outbox.

    Args:
        name: The stored name (default: the class's name).
        version: The payload's version.

    Returns:
        The decorator; it returns the class unchanged.

    Examples:
        ```python
        @event_type("order.placed", version=2)
        @dataclass(frozen=True, kw_only=True)
        class OrderPlaced(DomainEvent):
            order_id: int
        ```
    """

    def decorate(cls: E) -> E:
        registry.register(cls, name, version)
        return cls

    return decorate


#: a year: the longest wait a RelayBackoff may ask for
_LONGEST_WAIT = 365 * 24 * 3600


@dataclasses.dataclass(frozen=True, slots=True)
class RelayBackoff:
    """How long a message waits after failed publish number ``n``: ``base * 2 ** (n - 1)`` up
    to ``max_delay`` seconds, of which up to a ``jitter`` fraction is random. A message is
    never given up on: ``dalkit outbox status`` shows the ones that keep failing.

    Raises:
        ConfigurationError: A field that is no finite number, ``base_delay`` below 0 or above
            ``max_delay``, ``max_delay`` above a year, or ``jitter`` outside [0, 1].

    Attributes:
        base_delay: Seconds after the first failure, doubled after each next one.
        max_delay: The longest wait, in seconds.
        jitter: The random fraction of each wait.
    """

    base_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        check_backoff("RelayBackoff", self.base_delay, self.max_delay, self.jitter)
        if self.max_delay > _LONGEST_WAIT:  # the retry time must still be a datetime
            raise ConfigurationError(f"RelayBackoff.max_delay is at most {_LONGEST_WAIT:,} s")

    def delay(self, attempts: int, random_fraction: float | None = None) -> float:
        """Seconds a message waits after its failed publish number ``attempts``.

        Args:
            attempts: How many publishes failed, from 1.
            random_fraction: A uniform random number in [0, 1) (default: a fresh one).

        Returns:
            The wait, at most ``max_delay``.
        """
        fraction = random.random() if random_fraction is None else random_fraction
        return backoff_delay(attempts, self.base_delay, self.max_delay, self.jitter, fraction)


# -- the relay's statements --------------------------------------------------------------------
_c = outbox.c
#: the most values one IN list of the relay's binds: asyncpg refuses a statement of more than
#: 32767 parameters, and a round that could not mark what it had published sent would publish
#: it all again, every round. A round claims the messages of at most this many aggregates.
IN_LIST_MAX = 10_000
_pending = _c.sent_at.is_(None)


def claim(keys: Sequence[str], limit: int, *, lock_rows: bool) -> sa.Select[Any]:
    """The pending messages of ``keys``, in id order; on PostgreSQL locked ``FOR UPDATE SKIP
    LOCKED`` so that no other relay can claim them while this one publishes."""
    statement = sa.select(outbox).where(_pending, _c.aggregate_key.in_(keys)).order_by(_c.id)
    statement = statement.limit(limit)
    return statement.with_for_update(skip_locked=True) if lock_rows else statement


def message(row: Mapping[Any, Any]) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        event_version=row["event_version"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        aggregate_key=row["aggregate_key"],
        payload=row["payload"],
        occurred_at=row["occurred_at"],
        attempts=row["attempts"],
    )


def mark_sent(ids: Sequence[int], now: dt.datetime) -> list[sa.Update]:
    """The UPDATEs marking ``ids`` sent, at most `IN_LIST_MAX` ids each."""
    return [
        outbox.update()
        .where(_c.id.in_(ids[start : start + IN_LIST_MAX]))
        .values(sent_at=now, last_error=None)
        for start in range(0, len(ids), IN_LIST_MAX)
    ]


def mark_failed(
    failed: OutboxMessage, error: BaseException, now: dt.datetime, backoff: RelayBackoff
) -> sa.Update:
    attempts = failed.attempts + 1
    retry_at = now + dt.timedelta(seconds=backoff.delay(attempts))
    text = f"{type(error).__name__}: {error}"[:2000]
    # storable in any text column: PostgreSQL refuses NUL, and UTF-8 a lone surrogate; either
    # would fail the round's transaction, and the message would go out again with no backoff
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return (
        outbox.update()
        .where(_c.id == failed.id)
        .values(attempts=attempts, next_attempt_at=retry_at, last_error=text)
    )


def prune(cutoff: dt.datetime) -> sa.Delete:
    return outbox.delete().where(_c.sent_at.is_not(None), _c.sent_at < cutoff)


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxStatus:
    """What ``dalkit outbox status`` shows.

    Attributes:
        pending: Messages not sent yet.
        failing: Pending messages whose last publish failed.
        sent: Messages sent and not pruned yet.
        oldest_pending_age_s: Seconds the oldest pending message has waited, if any.
        last_error: The error of the latest failed publish, if any.
    """

    pending: int
    failing: int
    sent: int
    oldest_pending_age_s: float | None
    last_error: str | None


def status_query() -> sa.Select[*tuple[Any, ...]]:
    failing = sa.and_(_pending, _c.attempts > 0)
    return sa.select(
        sa.func.count().filter(_pending).label("pending"),
        sa.func.count().filter(failing).label("failing"),
        sa.func.count().filter(_c.sent_at.is_not(None)).label("sent"),
        sa.func.min(_c.created_at).filter(_pending).label("oldest"),
    )


def last_error_query() -> sa.Select[Any]:
    return (
        sa.select(_c.last_error)
        .where(_pending, _c.last_error.is_not(None))
        .order_by(_c.id.desc())
        .limit(1)
    )


def build_status(row: Mapping[Any, Any], last_error: str | None, now: dt.datetime) -> OutboxStatus:
    oldest = row["oldest"]
    if oldest is not None and oldest.tzinfo is None:
        # an aggregate over a UTCDateTime column comes back untyped from SQLite: naive UTC text
        oldest = dt.datetime.fromisoformat(str(oldest)).replace(tzinfo=dt.UTC)
    return OutboxStatus(
        pending=int(row["pending"]),
        failing=int(row["failing"]),
        sent=int(row["sent"]),
        oldest_pending_age_s=None if oldest is None else (now - oldest).total_seconds(),
        last_error=last_error,
    )
