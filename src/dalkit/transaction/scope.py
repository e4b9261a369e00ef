"""What code inside a transaction reaches without being handed it: the current session, and
callbacks that run after the outermost commit or rollback, savepoint-aware like Django's
``on_commit``. No I/O: the transaction runners decide when the callbacks run.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dalkit.errors import NoActiveTransactionError, TransactionError, TransactionUsageError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from dalkit.transaction.options import TransactionOptions

__all__ = [
    "AsyncTransactionScope",
    "Callback",
    "TransactionScope",
    "current_async_session",
    "current_scope",
    "current_session",
    "enter_scope",
    "exit_scope",
    "on_commit",
    "on_rollback",
    "settle",
    "settle_async",
]

log = logging.getLogger("dalkit.transaction")

_current: contextvars.ContextVar[TransactionScope | None] = contextvars.ContextVar(
    "dalkit_transaction", default=None
)


class Callback:
    """A registered callback and where it stands: ``level`` is the savepoint depth that owns
    it; ``undone`` marks a rollback callback whose savepoint rolled back; ``rank`` puts it
    ahead of the callbacks of lower rank of its level (the features' own bookkeeping, which
    the user's callbacks may rely on, ahead of them)."""

    __slots__ = ("fn", "level", "on_commit", "rank", "robust", "undone")

    def __init__(
        self, fn: Callable[[], object], *, on_commit: bool, robust: bool, level: int, rank: int
    ):
        self.fn = fn
        self.on_commit = on_commit
        self.robust = robust
        self.level = level
        self.rank = rank
        self.undone = False

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


class TransactionScope:
    """One running transaction as the code inside it sees it: its session, its options, and
    the callbacks waiting for it to end.

    Callbacks sit in one list in registration order, tagged with the savepoint depth they
    belong to; deeper ones are always at the tail, so ending a savepoint only looks there.
    """

    __slots__ = (
        "_depth",
        "callbacks",
        "discarded",
        "ending",
        "finished",
        "holder",
        "options",
        "owner",
        "parent",
        "session",
        "state",
    )

    is_async = False

    def __init__(
        self,
        owner: object,
        session: Any,
        options: TransactionOptions,
        parent: TransactionScope | None = None,
    ) -> None:
        self.owner = owner
        self.session = session
        self.options = options
        self.parent = parent  # the transaction this one started in, if any
        #: None until the first on_commit()/on_rollback(): most transactions register none,
        #: and the runner then needs neither a list nor a call to find it empty
        self.callbacks: list[Callback] | None = None
        self._depth = 0
        #: set by ``session.rollback()`` inside the transaction: it ends with nothing to commit
        self.discarded = False
        #: set once the transaction has ended: a task or thread that started inside it and
        #: outlives it must never join it (its writes would vanish with no error)
        self.finished = False
        #: the thread or task ending the transaction, once one has begun to while others may
        #: still ask for it (the web integration's, as a response starts): to every other it
        #: has ended, so that a task asking then gets a transaction of its own (the web
        #: integration's request transaction has an ``ending`` equal to its own code's tasks and
        #: threads while it runs, and to no background task of its response)
        self.ending: object = None
        #: the thread or task running the transaction: its session is not safe to share
        self.holder: object = self.current_holder()
        #: per-transaction state of the features built on the runner (cache, replicas)
        self.state: dict[str, Any] | None = None

    @staticmethod
    def current_holder() -> object:
        return threading.get_ident()

    def live(self) -> TransactionScope | None:
        """The innermost transaction among this one and its ancestors still running."""
        if not self.finished and self.ending is None:
            # the loop's first step, without its generator: a running transaction, which every
            # cached read and captured statement asks about, answers in 0.05 us, not 0.36 (timeit)
            return self
        for scope in self.ancestors():
            ending = scope.ending
            if not scope.finished and (ending is None or ending == scope.current_holder()):
                return scope
        return None

    def check_holder(self) -> None:
        """Refuse to let another thread or task join this transaction while it runs."""
        holder = self.current_holder()
        if holder != self.holder:
            kind = "task" if self.is_async else "thread"
            raise TransactionError(
                f"this transaction belongs to another {kind}, and its session must never be "
                f"shared between {kind}s: await the work inside the transaction's own {kind}, "
                "or give this one a transaction of its own (propagation='requires_new')"
            )

    def ancestors(self) -> Iterator[TransactionScope]:
        """This scope and the ones it was started inside, innermost first."""
        scope: TransactionScope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    # -- callbacks -----------------------------------------------------------------------------
    def add(
        self, fn: Callable[[], object], *, on_commit: bool, robust: bool, rank: int = 0
    ) -> Callback:
        """Register ``fn`` at the current savepoint level, behind the callbacks of that level
        whose rank is at least ``rank``.

        Args:
            fn: The callback.
            on_commit: Run after a commit (else after a rollback).
            robust: Log its failure and go on, rather than raise it.
            rank: Above 0 for a feature's own callback that the user's callbacks of the same
                transaction may rely on having run (the cache's invalidation: 1; the replica
                router's WAL position, which the invalidation reads: 2).

        Returns:
            The registered callback.
        """
        if not self.is_async and inspect.iscoroutinefunction(fn):
            raise TransactionUsageError(
                f"{getattr(fn, '__qualname__', fn)} is a coroutine function, but this is a "
                "sync transaction: nothing would await it"
            )
        callback = Callback(fn, on_commit=on_commit, robust=robust, level=self._depth, rank=rank)
        callbacks = self.callbacks
        if callbacks is None:
            self.callbacks = [callback]
            return callback
        index = len(callbacks)
        if rank:
            while index > 0 and callbacks[index - 1].level == self._depth:
                if callbacks[index - 1].rank >= rank:
                    break
                index -= 1
        callbacks.insert(index, callback)
        return callback

    def savepoint_started(self) -> None:
        self._depth += 1

    def savepoint_released(self) -> None:
        """The savepoint's callbacks now belong to the level around it, the ranked ones ahead
        of that level's others (registered at the first write, inside the savepoint, the
        cache's invalidation still runs before an ``on_commit`` registered before it)."""
        callbacks = self.callbacks
        self._depth -= 1
        if callbacks is None:
            return
        start = self._savepoint_start(callbacks, self._depth + 1)
        ranked = False
        for callback in callbacks[start:]:
            callback.level -= 1
            ranked = ranked or callback.rank > 0
        if ranked:  # stable: the level's callbacks of one rank keep their order
            start = self._savepoint_start(callbacks, self._depth)
            callbacks[start:] = sorted(callbacks[start:], key=_minus_rank)

    def savepoint_rolled_back(self) -> None:
        """Its commit callbacks can never run; its rollback callbacks will, at the end."""
        callbacks = self.callbacks
        if callbacks is not None:
            start = self._savepoint_start(callbacks, self._depth)
            kept = [callback for callback in callbacks[start:] if not callback.on_commit]
            for callback in kept:
                callback.undone = True
                callback.level -= 1
            callbacks[start:] = kept
        self._depth -= 1

    def rolled_back_inside(self) -> None:
        """``session.rollback()`` inside the transaction undid all of it: its commit callbacks
        can never run; its rollback callbacks will, when it ends."""
        self.discarded = True
        if self.callbacks is not None:
            self.callbacks = [callback for callback in self.callbacks if not callback.on_commit]
            for callback in self.callbacks:
                callback.undone = True

    @staticmethod
    def _savepoint_start(callbacks: list[Callback], level: int) -> int:
        """Index of the first callback of ``level`` (the deepest level: the tail)."""
        start = len(callbacks)
        while start > 0 and callbacks[start - 1].level == level:
            start -= 1
        return start

    def after_commit(self) -> list[Callback]:
        """What runs once the transaction committed: commit callbacks, and rollback callbacks
        of savepoints that rolled back inside it, in registration order."""
        return [c for c in self.callbacks or () if c.on_commit or c.undone]

    def after_rollback(self) -> list[Callback]:
        return [c for c in self.callbacks or () if not c.on_commit]


def _minus_rank(callback: Callback) -> int:
    return -callback.rank


class AsyncTransactionScope(TransactionScope):
    """A transaction of the async API: its session is an AsyncSession, its callbacks may
    return awaitables."""

    __slots__ = ()
    is_async = True

    @staticmethod
    def current_holder() -> object:
        try:
            return asyncio.current_task()
        except RuntimeError:  # no running loop: a sync caller reached an async scope
            return threading.get_ident()


#: ``current_scope()``: the innermost running dalkit transaction of this thread or task, if any.
current_scope = _current.get
#: ``token = enter_scope(scope)`` makes ``scope`` (started in ``scope.parent``) the current
#: transaction of this thread or task until ``exit_scope(token)``.
enter_scope = _current.set


def exit_scope(token: contextvars.Token[TransactionScope | None]) -> None:
    """Undo ``enter_scope()``. A with-block may end in another task or thread than it began in
    (an async fixture's teardown, an exit stack closed elsewhere), whose context the token does
    not belong to: its scope is marked finished first, which every lookup skips, so the
    transaction still ends as the block says."""
    try:
        _current.reset(token)
    except ValueError:
        log.debug("a transaction ended in another context than it began in")


def _require_scope(what: str) -> TransactionScope:
    current = _current.get()
    scope = None if current is None else current.live()
    if scope is None:
        raise NoActiveTransactionError(
            f"{what} needs a running transaction: call it inside db.transaction(), "
            "db.run_transaction() or a @db.transactional function"
        )
    return scope


def current_session() -> Session:
    """The session of the innermost running transaction (sync API).

    Returns:
        The session of the running `db.session()`, `db.transaction()` or transaction function.

    Raises:
        NoActiveTransactionError: Outside a transaction, or inside an async one.
        TransactionError: In another thread running a copy of the transaction's context.
    """
    scope = _require_scope("current_session()")
    if scope.is_async:
        raise NoActiveTransactionError(
            "the running transaction is an async one: use dalkit.current_async_session()"
        )
    scope.check_holder()  # the session belongs to the transaction's own thread
    session: Session = scope.session
    return session


def current_async_session() -> AsyncSession:
    """The AsyncSession of the innermost running transaction (async API).

    Returns:
        The session of the running `db.session()`, `db.transaction()` or transaction function.

    Raises:
        NoActiveTransactionError: Outside a transaction, or inside a sync one.
        TransactionError: In a task started inside it (``asyncio.gather``, ``create_task``).
    """
    scope = _require_scope("current_async_session()")
    if not scope.is_async:
        raise NoActiveTransactionError(
            "the running transaction is a sync one: use dalkit.current_session()"
        )
    scope.check_holder()  # the session belongs to the transaction's own task
    session: AsyncSession = scope.session
    return session


def on_commit(fn: Callable[[], object], robust: bool = False) -> None:
    """Run ``fn()`` after the outermost transaction commits; never if it rolls back.

    Registered inside a savepoint that rolls back, ``fn`` is dropped. Under the async API ``fn``
    may return an awaitable, awaited before the transaction call returns. A failing ``fn``
    stops the callbacks after it and raises (the commit stands), unless ``robust=True``:
    then it is logged and the rest still run.

    Args:
        fn: The callback, called without arguments.
        robust: Log a failure of ``fn`` and go on, rather than raise it.

    Raises:
        NoActiveTransactionError: Outside a transaction.

    Examples:
        ```python
        with db.transaction() as session:
            session.add(Order(id=1))
            on_commit(lambda: send_email("order 1 placed"))  # only once the order is stored
        ```
    """
    _require_scope("on_commit()").add(fn, on_commit=True, robust=robust)


def on_rollback(fn: Callable[[], object]) -> None:
    """Run ``fn()`` after the outermost transaction rolls back, retried attempts included;
    also after it commits if the savepoint ``fn`` was registered in rolled back.

    Failures are logged, never raised: they would hide the error that caused the rollback.

    Args:
        fn: The callback, called without arguments.

    Raises:
        NoActiveTransactionError: Outside a transaction.
    """
    _require_scope("on_rollback()").add(fn, on_commit=False, robust=True)


def settle(result: object) -> None:
    """The sync runner's check of a callback's result: there is nothing to await it with."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # or Python warns that the coroutine was never awaited
        raise TransactionError("a callback of a sync transaction returned an awaitable")


async def settle_async(result: object) -> None:
    """The async runner awaits what a callback returns, if it is awaitable."""
    if inspect.isawaitable(result):
        await result
