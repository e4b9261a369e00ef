"""What the sync and async units of work decide without I/O: their settings and hooks, their
repositories, and which events a commit carries, in order, with their aggregates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import logging
import sys
import types
import typing
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from dalkit.audit import entity_key
from dalkit.errors import ConfigurationError, UnitOfWorkError
from dalkit.outbox.events import (
    DomainEvent,
    EventBus,
    HasEvents,
    RecordedEvent,
    record,
)
from dalkit.outbox.messages import EventTypeRegistry, registry
from dalkit.outbox.relay_async import BEGIN_NOW, WRITER_LOCK_NAMESPACE
from dalkit.outbox.rows import outbox_rows
from dalkit.outbox.uncollected import holders
from dalkit.repository.base import RepositoryBase

# both flavours, for the generated unit.py to name its own plain repository from here; the
# async one on first use, since it needs greenlet, which only the async extras bring
from dalkit.repository.sql import Repository
from dalkit.tables import outbox as outbox_table
from dalkit.transaction.block import OtherColourRefused

if TYPE_CHECKING:
    from dalkit.repository.sql_async import AsyncRepository
else:

    def __getattr__(name: str) -> Any:
        if name == "AsyncRepository":
            from dalkit.repository.sql_async import AsyncRepository

            return AsyncRepository
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncRepository",
    "Repository",
    "RepositoryBase",
    "UnitOfWorkBase",
    "UnitOfWorkHooks",
    "UnitOfWorkSettings",
    "plain_repository",
]

log = logging.getLogger("dalkit.uow")

Hook = Callable[[Any], object]


class UnitOfWorkHooks:
    """Functions called with the unit of work: before it commits (they may still write), after
    it committed, before it rolls back (its session may be unusable after a database error, so
    they should only look at what is in memory; their errors are logged, never raised over the
    cause), after it rolled back. Under the async API they may be coroutine functions. Each
    registering method returns the function, so it also works as a decorator."""

    def __init__(self) -> None:
        self.before_commit_hooks: list[Hook] = []
        self.after_commit_hooks: list[Hook] = []
        self.before_rollback_hooks: list[Hook] = []
        self.after_rollback_hooks: list[Hook] = []

    def before_commit(self, fn: Hook) -> Hook:
        """Call ``fn(uow)`` before the unit of work commits (it may still write).

        Args:
            fn: The hook; a coroutine function under the async API.

        Returns:
            ``fn`` itself, so that this works as a decorator.
        """
        self.before_commit_hooks.append(fn)
        return fn

    def before_rollback(self, fn: Hook) -> Hook:
        """Call ``fn(uow)`` before it rolls back (look only at what is in memory).

        Args:
            fn: The hook; a coroutine function under the async API.

        Returns:
            ``fn`` itself, so that this works as a decorator.
        """
        self.before_rollback_hooks.append(fn)
        return fn

    def after_commit(self, fn: Hook) -> Hook:
        """Call ``fn(uow)`` after it committed (after the outermost commit, when nested).

        Args:
            fn: The hook; a coroutine function under the async API.

        Returns:
            ``fn`` itself, so that this works as a decorator.
        """
        self.after_commit_hooks.append(fn)
        return fn

    def after_rollback(self, fn: Hook) -> Hook:
        """Call ``fn(uow)`` after it rolled back.

        Args:
            fn: The hook; a coroutine function under the async API.

        Returns:
            ``fn`` itself, so that this works as a decorator.
        """
        self.after_rollback_hooks.append(fn)
        return fn


@dataclasses.dataclass
class UnitOfWorkSettings:
    """A database's defaults for its units of work (``uow_settings(db)``).

    Attributes:
        event_bus: Gets the events after each commit.
        outbox: Store the events in the ``dalkit_outbox`` table instead, in the committing
            transaction, for an [`OutboxRelay`][dalkit.OutboxRelay] to deliver.
        event_types: Where the outbox finds event classes' stored names.
        hooks: Run for every unit of work of the database, before the unit's own.
    """

    event_bus: EventBus | None = None
    outbox: bool = False
    event_types: EventTypeRegistry = dataclasses.field(default_factory=lambda: registry)
    hooks: UnitOfWorkHooks = dataclasses.field(default_factory=UnitOfWorkHooks)


def _annotations(cls: type[Any]) -> dict[str, Any]:
    """The evaluated annotations of ``cls`` and its bases above dalkit's own classes, each in
    its own module (dalkit's public classes report ``__module__ = "dalkit"``, where the names
    their annotations use are not defined)."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        own = inspect.get_annotations(klass)
        if not own or klass.__module__ == "dalkit" or klass.__module__.startswith("dalkit.uow"):
            continue
        module = sys.modules.get(klass.__module__)
        for name, annotation in own.items():
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            try:
                hints.update(
                    typing.get_type_hints(
                        holder, globalns=vars(module) if module else {}, localns=dict(vars(klass))
                    )
                )
            except TypeError:
                continue  # ClassVar and other forms that name no repository
    return hints


class UnitOfWorkBase(OtherColourRefused):
    """State and decisions shared by UnitOfWork and AsyncUnitOfWork.

    States: ``"new"`` until entered, ``"open"`` inside, then ``"committed"`` or
    ``"rolled_back"``.
    """

    _repository_attributes: ClassVar[dict[str, type[RepositoryBase[Any]]] | None] = None
    session: Any  # the Session or AsyncSession, set on entering

    def __init__(
        self,
        settings: UnitOfWorkSettings,
        *,
        actor: object | None,
        request_id: object | None,
        event_bus: EventBus | None,
        outbox: bool | None,
    ) -> None:
        self.actor = actor
        self.request_id = request_id
        self.event_bus = event_bus if event_bus is not None else settings.event_bus
        self.outbox = settings.outbox if outbox is None else outbox
        self.event_types = settings.event_types
        self.hooks = UnitOfWorkHooks()
        self._database_hooks = settings.hooks
        self.state = "new"
        self._published: list[RecordedEvent] = []
        self._since = -1  # the event sequence number it began at, inside a surrounding one
        self._repositories: dict[type[Any], Any] = {}

    # -- repositories --------------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._repository_attributes = None  # resolved on first use: annotations may be strings

    @classmethod
    def _declared_repositories(cls) -> dict[str, type[RepositoryBase[Any]]]:
        declared = cls.__dict__.get("_repository_attributes")
        if declared is None:
            try:
                hints = _annotations(cls)
            except NameError as exc:
                raise ConfigurationError(
                    f"{cls.__name__} annotates a repository this module cannot see: {exc}; "
                    "define or import it at module level"
                ) from None
            declared = {
                name: hint
                for name, hint in hints.items()
                if isinstance(hint, type) and issubclass(hint, RepositoryBase)
            }
            cls._repository_attributes = declared
        return declared

    def _repository(self, target: type[Any], plain: type[RepositoryBase[Any]]) -> Any:
        """This unit of work's instance of ``target``, created on first use: a repository class,
        or a mapped class, which gets a ``plain`` repository (every default, no allow-list)."""
        self._check_open("repository()")
        found = self._repositories.get(target)
        if found is None:
            repository_class = target
            if not issubclass(target, RepositoryBase):
                repository_class = plain_repository(plain, target)
            found = repository_class(self.session)
            self._repositories[target] = found
        return found

    def _bind_repositories(self) -> None:
        for name, repository_class in self._declared_repositories().items():
            setattr(self, name, self._repository(repository_class, RepositoryBase))

    # -- events --------------------------------------------------------------------------------
    def _record_published(self, event: DomainEvent, aggregate: object | None) -> None:
        self._check_open("publish()")
        if not isinstance(event, DomainEvent):
            raise TypeError(f"publish() takes a DomainEvent, not {type(event).__name__}")
        if aggregate is None or (isinstance(aggregate, tuple) and len(aggregate) == 2):
            if aggregate is not None:
                _check_aggregate(aggregate)
            self._published.append(record(event, aggregate=aggregate))
        else:
            self._published.append(record(event, source=aggregate))

    def _take_events(self, since: int = -1) -> list[RecordedEvent]:
        """Every event recorded so far (after sequence number ``since``), by entities of the
        session or published, in the order they were recorded; nothing is left behind to be
        recorded twice."""
        session = self._sync_session()
        found = list(self._published)
        self._published.clear()
        for entity in holders(session):
            if isinstance(entity, HasEvents):
                found.extend(entity._take_events(since))
        found.sort(key=lambda recorded: recorded.sequence)
        return found

    def _discard_events(self) -> None:
        if self.state == "open":
            # in a surrounding transaction's session, only what was recorded since this unit
            # began goes with its savepoint: the rest is the surrounding unit's to commit
            dropped = self._take_events(self._since)
            if dropped:
                log.debug("unit of work rolled back: %d event(s) dropped", len(dropped))

    def _outbox_rows(self, events: Iterable[RecordedEvent]) -> list[dict[str, Any]]:
        entries = [(recorded.event, _aggregate(recorded)) for recorded in events]
        return outbox_rows(entries, self.event_types, dt.datetime.now(dt.UTC))

    @staticmethod
    def _aggregate_locks(rows: Iterable[dict[str, Any]], dialect: str) -> list[sa.Executable]:
        """PostgreSQL: one transaction-level advisory lock per aggregate the rows belong to, in
        a fixed order (no deadlock between two units locking the same pair), after making the
        transaction begin (a deferred BEGIN would let a lock taken in a SELECT end with it):
        units of work writing events of one aggregate then commit one after the other."""
        if dialect != "postgresql":
            return []  # SQLite: one writer at a time already
        keys = sorted({row["aggregate_key"] for row in rows if row["aggregate_id"] is not None})
        locks: list[sa.Executable] = [
            sa.select(sa.func.pg_advisory_xact_lock(WRITER_LOCK_NAMESPACE, sa.func.hashtext(key)))
            for key in keys
        ]
        return [BEGIN_NOW, *locks] if locks else []

    def _warn_undelivered(self, events: list[RecordedEvent]) -> None:
        if events and self.event_bus is None and not self.outbox:
            log.warning(
                "%d event(s) recorded but the unit of work has no event bus and no outbox: "
                "they were dropped",
                len(events),
            )

    # -- hooks ---------------------------------------------------------------------------------
    def _hooks(self, kind: str) -> list[Hook]:
        name = f"{kind}_hooks"
        return [*getattr(self._database_hooks, name), *getattr(self.hooks, name)]

    # -- state ---------------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self.state != "open":
            where = "before the with-block" if self.state == "new" else "after it ended"
            raise UnitOfWorkError(
                f"{what} used {where}: the unit of work is {self.state.replace('_', ' ')}"
            )

    def _sync_session(self) -> sa.orm.Session:
        # an AsyncSession runs on a sync Session, which holds the identity map
        session: sa.orm.Session = getattr(self.session, "sync_session", self.session)
        return session


def _check_aggregate(aggregate: tuple[object, object]) -> None:
    """Refuse a ``(type, id)`` the outbox cannot keep, when it is published: PostgreSQL
    would refuse the row only at the flush, SQLite keep it whole."""
    for what, value in zip(("type", "id"), aggregate, strict=True):
        text = str(value)
        if len(text) > AGGREGATE_TEXT_MAX:
            raise UnitOfWorkError(
                f"the aggregate {what} is {len(text):,} characters long; the outbox keeps at "
                f"most {AGGREGATE_TEXT_MAX}"
            )


def _aggregate(recorded: RecordedEvent) -> tuple[str, str] | None:
    """(type, id) of the aggregate an event belongs to: given, or the recording entity's."""
    if recorded.aggregate is not None:
        kind, ident = recorded.aggregate
        return str(kind), str(ident)
    if recorded.source is None:
        return None
    state = sa.inspect(recorded.source)
    if state.identity is None:
        raise UnitOfWorkError(
            f"{type(recorded.source).__name__} recorded an event but has no primary key: "
            "add it to the unit of work's session"
        )
    name = getattr(type(recorded.source), "audit_name", None) or type(recorded.source).__name__
    return name, entity_key(state.identity)


#: the longest aggregate type or id the outbox keeps (its columns' width)
AGGREGATE_TEXT_MAX: int = outbox_table.c.aggregate_id.type.length  # type: ignore[attr-defined]
_plain: dict[tuple[type[Any], type[Any]], type[RepositoryBase[Any]]] = {}


def plain_repository(flavour: type[RepositoryBase[Any]], model: type[Any]) -> type[Any]:
    """``class <Model>Repository(flavour[model])`` with every default, made once per model so
    that its checked plan is built once too."""
    if not isinstance(model, type):
        raise TypeError(f"repository() takes a repository or a mapped class, not {model!r}")
    try:
        sa.inspect(model)
    except sa.exc.NoInspectionAvailable:
        raise ConfigurationError(
            f"repository() takes a repository class or a mapped class; {model.__name__} is neither"
        ) from None
    found = _plain.get((flavour, model))
    if found is None:
        name = f"{model.__name__}Repository"
        found = _plain[(flavour, model)] = type(name, (flavour,), {"model": model})
    return found


_settings: weakref.WeakKeyDictionary[object, UnitOfWorkSettings] = weakref.WeakKeyDictionary()


def uow_settings(db: object) -> UnitOfWorkSettings:
    """The unit-of-work defaults of ``db`` (a Database or AsyncDatabase), made on first use: the
    settings live here rather than on the database, which knows nothing of units of work.

    Args:
        db: A [`Database`][dalkit.Database] or [`AsyncDatabase`][dalkit.AsyncDatabase].

    Returns:
        The settings, the same object for the life of ``db``: change them in place.

    Examples:
        ```python
        settings = uow_settings(db)
        settings.outbox = True  # every UnitOfWork(db) stores its events in the outbox


        @settings.hooks.after_commit
        def log_commit(uow: UnitOfWork) -> None: ...
        ```
    """
    settings = _settings.get(db)
    if settings is None:
        settings = _settings[db] = UnitOfWorkSettings()
    return settings
