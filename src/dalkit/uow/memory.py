"""In-memory units of work, cosmicpython's FakeUnitOfWork for dalkit: service-layer tests run
against in-memory repositories, with UnitOfWork's states, hooks and events, and no database.
"""

from __future__ import annotations

import contextlib
import logging
import typing
from collections.abc import Iterator, MutableMapping
from typing import Any, Self, TypeVar, overload

from dalkit.errors import UnitOfWorkError
from dalkit.outbox.events import (
    DomainEvent,
    EventBus,
    HasEvents,
    RecordedEvent,
    deliver,
    deliver_async,
)
from dalkit.repository.abstract import AbstractRepository
from dalkit.repository.base import RepositoryBase
from dalkit.repository.memory import InMemoryRepository
from dalkit.repository.memory_async import AsyncInMemoryRepository, Snapshot
from dalkit.transaction.scope import settle, settle_async
from dalkit.uow.base import UnitOfWorkBase, UnitOfWorkSettings

__all__ = ["AsyncInMemoryUnitOfWork", "InMemoryUnitOfWork"]

log = logging.getLogger("dalkit.uow")

R = TypeVar("R", bound=RepositoryBase[Any])
M = TypeVar("M")
Fake = InMemoryRepository[Any] | AsyncInMemoryRepository[Any]


class _InMemoryUnitOfWorkBase(UnitOfWorkBase):
    """What the sync and async in-memory units share: their repositories, the snapshots that
    undo a rolled-back unit, and the events a commit hands on."""

    _fake_class: typing.ClassVar[type[Any]]

    def __init__(
        self,
        repositories: MutableMapping[type[Any], Any] | None = None,
        *,
        actor: object | None = None,
        request_id: object | None = None,
        event_bus: EventBus | None = None,
    ) -> None:
        """A unit of work over in-memory repositories.

        Args:
            repositories: The in-memory data by repository class, from a previous unit's
                ``repositories`` (default: empty).
            actor: Who acts (kept as ``uow.actor``, as the SQL unit of work has it).
            request_id: The request the changes belong to.
            event_bus: Where events go after the commit.
        """
        settings = UnitOfWorkSettings(event_bus=event_bus)
        super().__init__(
            settings, actor=actor, request_id=request_id, event_bus=event_bus, outbox=False
        )
        #: the in-memory data, by repository class: pass it to the next unit to continue
        self.repositories: MutableMapping[type[Any], Any] = (
            {} if repositories is None else repositories
        )
        self.committed = False
        #: the events this unit handed to the event bus (or would have) when it committed
        self.events: list[DomainEvent] = []
        self._snapshots: dict[type[Any], tuple[Fake, Snapshot]] = {}

    @overload
    def repository(self, target: type[R]) -> R: ...  # type: ignore[overload-overlap]

    @overload
    def repository(self, target: type[M]) -> AbstractRepository[M]: ...

    def repository(self, target: type[Any]) -> Any:
        """The in-memory repository for a repository class (the class itself when it is an
        in-memory one, else one mirroring its model and allow-lists), with the same API; given
        a mapped class, one with every default.

        Args:
            target: A repository class or a mapped class.

        Returns:
            The in-memory repository, the same one for the rest of this unit of work.
        """
        return self._repository(target, self._fake_class)

    def _repository(self, target: type[Any], plain: type[RepositoryBase[Any]]) -> Any:
        self._check_open("repository()")
        found = self.repositories.get(target)
        if found is None:
            fake: Any = self._fake_class
            if issubclass(target, fake):
                made = target
            elif issubclass(target, RepositoryBase):
                made = fake.mirroring(target)
            else:
                made = type(f"InMemory{target.__name__}Repository", (fake,), {"model": target})
            found = self.repositories[target] = made()
        if target not in self._snapshots:
            found.unit_ended = None
            self._snapshots[target] = (found, found.snapshot())
        return found

    def _open(self) -> None:
        if self.state != "new":
            raise UnitOfWorkError("a unit of work is entered once: make a new one")
        self.state = "open"
        self._bind_repositories()

    def _take_events(self, since: int = -1) -> list[RecordedEvent]:
        found = list(self._published)
        self._published.clear()
        seen: set[int] = set()
        for fake, (_, values) in self._snapshots.values():
            for entity in (*fake.entities(), *(e for e, _ in values)):
                if isinstance(entity, HasEvents) and id(entity) not in seen:
                    seen.add(id(entity))
                    found.extend(entity._take_events(since))
        found.sort(key=lambda recorded: recorded.sequence)
        return found

    def _keep(self, recorded: list[RecordedEvent]) -> list[DomainEvent]:
        """Make the unit's writes stay; the events to hand on."""
        self._end_repositories("committed")
        self.state = "committed"
        self.committed = True
        self.events = [r.event for r in recorded]
        return self.events if self.event_bus is not None else []

    def _undo(self) -> None:
        self._discard_events()
        for fake, snapshot in self._snapshots.values():
            fake.restore_snapshot(snapshot)
        self._end_repositories("rolled back")
        self.state = "rolled_back"

    def _end_repositories(self, how: str) -> None:
        """Repositories this unit handed out refuse further use until a unit takes them
        again, as the SQL ones do: writes through one would otherwise outlive the unit."""
        for fake, _ in self._snapshots.values():
            fake.unit_ended = f"was {how}"
        self._snapshots.clear()


class InMemoryUnitOfWork(_InMemoryUnitOfWorkBase):
    """``with InMemoryUnitOfWork() as uow:`` what [`UnitOfWork`][dalkit.UnitOfWork] does,
    in memory.

    Commits when the block ends cleanly (``committed`` turns true, then recorded and published
    events go to ``event_bus``, then the after-commit hooks run); rolls back when it raises or
    after `rollback()`, undoing every write made through its repositories. Pass
    ``uow.repositories`` to the next unit to see what this one committed.

    Examples:
        ```python
        with InMemoryUnitOfWork() as uow:
            uow.repository(UserRepository).add(User(name="Ada"))
        with InMemoryUnitOfWork(uow.repositories) as uow:  # sees what the first committed
            print(uow.repository(UserRepository).count())  # 1
        ```
    """

    _fake_class = InMemoryRepository

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.state == "open":
            if exc_info[1] is None:
                self.commit()
            else:
                self._roll_back()

    def publish(self, event: DomainEvent, *, aggregate: object | None = None) -> None:
        """Hand ``event`` to the event bus after the commit, in order with entities' events.

        Args:
            event: The domain event.
            aggregate: An entity or a ``(type, id)`` pair, as [`UnitOfWork`][dalkit.UnitOfWork]
                takes it.
        """
        self._record_published(event, aggregate)

    def commit(self) -> None:
        """Run the before-commit hooks, keep the writes, hand the events to the bus and run the
        after-commit hooks (a failing before-commit hook rolls back instead).

        Raises:
            UnitOfWorkError: When the unit of work is not open.
        """
        self._check_open("commit()")
        try:
            for hook in self._hooks("before_commit"):
                settle(hook(self))
            events = self._keep(self._take_events())
        except BaseException:
            self._roll_back()
            raise
        if events and self.event_bus is not None:
            deliver(self.event_bus, events)
        self._run_hooks("after_commit")

    def rollback(self) -> None:
        """Undo every write made through this unit's repositories and drop its events.

        Raises:
            UnitOfWorkError: When the unit of work is not open.
        """
        self._check_open("rollback()")
        self._roll_back()

    def _roll_back(self) -> None:
        self._undo()
        self._run_hooks("after_rollback")

    def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks(kind):
            with _logged_failure(kind, hook):
                settle(hook(self))


class AsyncInMemoryUnitOfWork(_InMemoryUnitOfWorkBase):
    """``async with AsyncInMemoryUnitOfWork() as uow:`` `InMemoryUnitOfWork` for the
    async API: its repositories are AsyncInMemoryRepository, its hooks may be coroutines."""

    _fake_class = AsyncInMemoryRepository

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.state == "open":
            if exc_info[1] is None:
                await self.commit()
            else:
                await self._roll_back()

    def publish(self, event: DomainEvent, *, aggregate: object | None = None) -> None:
        """Hand ``event`` to the event bus after the commit, in order with entities' events.

        Args:
            event: The domain event.
            aggregate: An entity or a ``(type, id)`` pair, as [`UnitOfWork`][dalkit.UnitOfWork]
                takes it.
        """
        self._record_published(event, aggregate)

    async def commit(self) -> None:
        """Run the before-commit hooks, keep the writes, hand the events to the bus and run the
        after-commit hooks (a failing before-commit hook rolls back instead).

        Raises:
            UnitOfWorkError: When the unit of work is not open.
        """
        self._check_open("commit()")
        try:
            for hook in self._hooks("before_commit"):
                await settle_async(hook(self))
            events = self._keep(self._take_events())
        except BaseException:
            await self._roll_back()
            raise
        if events and self.event_bus is not None:
            await deliver_async(self.event_bus, events)
        await self._run_hooks("after_commit")

    async def rollback(self) -> None:
        """Undo every write made through this unit's repositories and drop its events.

        Raises:
            UnitOfWorkError: When the unit of work is not open.
        """
        self._check_open("rollback()")
        await self._roll_back()

    async def _roll_back(self) -> None:
        self._undo()
        await self._run_hooks("after_rollback")

    async def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks(kind):
            with _logged_failure(kind, hook):
                await settle_async(hook(self))


@contextlib.contextmanager
def _logged_failure(kind: str, hook: object) -> Iterator[None]:
    """After-commit and after-rollback hooks cannot undo anything: a failure is logged, and
    the other hooks still run (as with UnitOfWork)."""
    try:
        yield
    except Exception:
        log.exception("%s hook %s failed", kind, getattr(hook, "__qualname__", hook))
