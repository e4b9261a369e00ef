"""Domain events: the `DomainEvent` base, the `HasEvents` mixin through which
entities record them, and the `EventBus` that hands them to sync or async handlers in
order, isolating a failing handler from the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import inspect
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextlib import closing
from typing import Any, ClassVar, TypeVar

from dalkit.outbox.uncollected import hold, next_sequence
from dalkit.outbox.uncollected import install as install_uncollected_check
from dalkit.secret_names import masked_repr

__all__ = [
    "DomainEvent",
    "EventBus",
    "Handler",
    "HandlerFailure",
    "HasEvents",
    "deliver",
    "deliver_async",
]

log = logging.getLogger("dalkit.events")

E = TypeVar("E", bound="DomainEvent")
Handler = Callable[[Any], object]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Something that happened in the domain; subclass it as a frozen dataclass.

    Attributes:
        event_id: Names the event everywhere (outbox, inbox deduplication); a new UUID.
        occurred_at: When it happened, in UTC (default: now).

    Examples:
        ```python
        @dataclass(frozen=True, kw_only=True)
        class UserRegistered(DomainEvent):
            user_id: int
        ```
    """

    event_id: str = dataclasses.field(default_factory=_new_id)
    occurred_at: dt.datetime = dataclasses.field(default_factory=_utcnow)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event waiting for its unit of work to commit, with where it came from: the recording
    entity (its key is only known after the flush) or an explicit aggregate."""

    sequence: int
    event: DomainEvent
    source: object | None = None
    aggregate: tuple[str, str] | None = None


def record(
    event: DomainEvent, *, source: object | None = None, aggregate: tuple[str, str] | None = None
) -> RecordedEvent:
    return RecordedEvent(next_sequence(), event, source, aggregate)


def sequence_now() -> int:
    """A sequence number below that of every event recorded from now on."""
    return next_sequence()


class HasEvents:
    """Mix into an entity so that it can record domain events; the unit of work that holds the
    entity collects them at commit and dispatches them (or writes them to the outbox) after it.
    """

    # not mapped: a plain instance attribute, created on first use (loaded entities skip
    # __init__, so it cannot be set there)
    _dalkit_events: list[RecordedEvent]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a commit that would drop recorded events refuses; a savepoint rolled back drops them
        install_uncollected_check()

    def record_event(self, event: DomainEvent) -> None:
        """Record ``event`` as having happened to this entity; the unit of work that writes
        the entity collects it at commit.

        Args:
            event: The domain event.
        """
        pending = self.__dict__.setdefault("_dalkit_events", [])
        pending.append(record(event, source=self))
        hold(self)  # its session keeps it (and its events) until a unit of work takes them

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        """Events recorded and not yet collected by a unit of work."""
        return tuple(r.event for r in self.__dict__.get("_dalkit_events", ()))

    def _take_events(self, since: int = -1) -> list[RecordedEvent]:
        """The events recorded after sequence number ``since`` (all by default), taken."""
        pending: list[RecordedEvent] = self.__dict__.pop("_dalkit_events", [])
        if since < 0:
            return pending
        kept = [r for r in pending if r.sequence <= since]  # an enclosing unit of work's
        if kept:
            self.__dict__["_dalkit_events"] = kept
        return [r for r in pending if r.sequence > since]


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerFailure:
    """A handler that raised, with the event it was given (its repr masks the event's secrets,
    as the log line does)."""

    handler: Handler
    event: DomainEvent
    error: BaseException

    def __repr__(self) -> str:
        handler = getattr(self.handler, "__qualname__", None) or repr(self.handler)
        return (
            f"HandlerFailure(handler={handler}, event={_shown(self.event)}, error={self.error!r})"
        )


# the queue of the dispatch running in this thread or task: bus.publish() inside a handler
# appends to it, so that what handlers publish is processed before dispatch returns
_queue: contextvars.ContextVar[deque[DomainEvent] | None] = contextvars.ContextVar(
    "dalkit_event_queue", default=None
)


class EventBus:
    """Handlers by event type: ``bus.subscribe(UserRegistered, send_welcome)``.

    A handler subscribed to a base class also gets its subclasses' events. Handlers run in
    subscription order, events in the order given; events published by handlers (through
    `publish()`) run after, until none are left. A handler that raises is logged with the
    event and the others still run.

    Examples:
        ```python
        bus = EventBus()
        bus.subscribe(UserRegistered, send_welcome)
        failures = bus.publish(UserRegistered(user_id=1))  # [] when every handler succeeded
        ```
    """

    #: how many events one dispatch may process, handlers' publications included: a handler
    #: that republishes what it receives would otherwise loop forever
    max_events: ClassVar[int] = 100_000

    def __init__(self) -> None:
        self._handlers: dict[type[DomainEvent], list[Handler]] = {}
        self._resolved: dict[type[DomainEvent], tuple[Handler, ...]] = {}

    def subscribe(self, event_type: type[E], handler: Callable[[E], object]) -> None:
        """Call ``handler(event)`` for every event of ``event_type`` (subclasses included).

        Args:
            event_type: A [`DomainEvent`][dalkit.DomainEvent] subclass.
            handler: A function or coroutine function of one event.

        Raises:
            TypeError: When ``event_type`` is not a `DomainEvent` subclass.
        """
        if not (isinstance(event_type, type) and issubclass(event_type, DomainEvent)):
            raise TypeError(f"subscribe() takes a DomainEvent subclass, not {event_type!r}")
        self._handlers.setdefault(event_type, []).append(handler)
        self._resolved.clear()

    def handlers_for(self, event_type: type[DomainEvent]) -> tuple[Handler, ...]:
        """The handlers an event of ``event_type`` goes to, in the order they run.

        Args:
            event_type: A `DomainEvent` subclass.

        Returns:
            The handlers subscribed to it or to one of its bases, base classes first.
        """
        resolved = self._resolved.get(event_type)
        if resolved is None:
            resolved = tuple(
                handler
                for klass in reversed(event_type.__mro__)
                for handler in self._handlers.get(klass, ())
            )
            self._resolved[event_type] = resolved
        return resolved

    def publish(self, event: DomainEvent) -> list[HandlerFailure]:
        """Dispatch ``event``; inside a handler, queue it behind the events being dispatched.

        Args:
            event: The domain event.

        Returns:
            The handlers that raised, with their errors (empty when queued).
        """
        return [] if _queued(event) else self.dispatch([event])

    async def publish_async(self, event: DomainEvent) -> list[HandlerFailure]:
        """`publish()` for async code: coroutine handlers are awaited.

        Args:
            event: The domain event.

        Returns:
            The handlers that raised, with their errors (empty when queued).
        """
        return [] if _queued(event) else await self.dispatch_async([event])

    def dispatch(self, events: Iterable[DomainEvent]) -> list[HandlerFailure]:
        """Run the handlers of ``events`` and of what they publish; returns the failures.

        Coroutine handlers run to completion with ``asyncio.run`` when no event loop runs in
        this thread; inside a running loop, use `dispatch_async()`.

        Args:
            events: The events, dispatched in this order.

        Returns:
            The handlers that raised, with the event and the error.
        """
        failures: list[HandlerFailure] = []
        with closing(self._deliveries(events)) as deliveries:
            for event, handler in deliveries:
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        _run_coroutine(result)
                except Exception as error:
                    failures.append(self._failed(handler, event, error))
        return failures

    async def dispatch_async(self, events: Iterable[DomainEvent]) -> list[HandlerFailure]:
        """`dispatch()` for async code: coroutine handlers are awaited in turn.

        Args:
            events: The events, dispatched in this order.

        Returns:
            The handlers that raised, with the event and the error.
        """
        failures: list[HandlerFailure] = []
        with closing(self._deliveries(events)) as deliveries:
            for event, handler in deliveries:
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception as error:
                    failures.append(self._failed(handler, event, error))
        return failures

    def _deliveries(
        self, events: Iterable[DomainEvent]
    ) -> Generator[tuple[DomainEvent, Handler], None, None]:
        """Each (event, handler) pair in order, with publish() queueing behind them meanwhile;
        closed promptly by the dispatchers so the queue is unset in the caller's context."""
        queue = deque(events)
        token = _queue.set(queue)
        try:
            for event in self._drain(queue):
                for handler in self.handlers_for(type(event)):
                    yield event, handler
        finally:
            _queue.reset(token)

    def _drain(self, queue: deque[DomainEvent]) -> Iterable[DomainEvent]:
        processed = 0
        while queue:
            processed += 1
            if processed > self.max_events:
                log.error("dispatch stopped after %d events: do handlers republish?", processed)
                queue.clear()
                return
            yield queue.popleft()

    @staticmethod
    def _failed(handler: Handler, event: DomainEvent, error: Exception) -> HandlerFailure:
        name = getattr(handler, "__qualname__", repr(handler))
        log.error("event handler %s failed for %s", name, _shown(event), exc_info=error)
        return HandlerFailure(handler, event, error)


def _shown(event: DomainEvent) -> str:
    """``event`` for the log: its fields, a secret-looking one's value as ``***``, in the
    dataclasses, mappings and lists it holds too."""
    if not dataclasses.is_dataclass(event):
        return f"{type(event).__name__}(event_id={event.event_id!r})"
    return masked_repr(event)


def _queued(event: DomainEvent) -> bool:
    """Queue ``event`` behind the dispatch running in this context, if there is one."""
    queue = _queue.get()
    if queue is None:
        return False
    queue.append(event)
    return True


def _run_coroutine(awaitable: Awaitable[object]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_await(awaitable))
        return
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # or Python warns that it was never awaited
    raise RuntimeError(
        "an async handler cannot run in a sync dispatch inside a running event loop; "
        "use dispatch_async() (the async unit of work does)"
    )


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable


def deliver(bus: EventBus, events: Iterable[DomainEvent]) -> list[HandlerFailure]:
    """``bus.dispatch(events)``: the sync units of work and relays call this."""
    return bus.dispatch(events)


async def deliver_async(bus: EventBus, events: Iterable[DomainEvent]) -> list[HandlerFailure]:
    """``bus.dispatch_async(events)``: the async twin of `deliver()`."""
    return await bus.dispatch_async(events)
