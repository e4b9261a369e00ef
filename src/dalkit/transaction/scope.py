"""What code inside a transaction reaches without being handed it: the current session, and
callbacks that run after the outermost commit or rollback, savepoint-aware like Django's
``on_commit``. No I/O: the transaction runners decide when the callbacks run.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any, Literal

from dalkit.errors import NoActiveTransactionError, TransactionError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from dalkit.transaction.options import TransactionOptions

__all__ = [
    "AsyncTransactionScope",
    "Callback",
    "SessionParameter",
    "TransactionScope",
    "check_transaction_function",
    "current_async_session",
    "current_scope",
    "current_session",
    "enter_scope",
    "exit_scope",
    "on_commit",
    "on_rollback",
    "session_parameter",
    "settle",
    "settle_async",
]

log = logging.getLogger("dalkit.transaction")

#: How a transaction function takes its session; see `session_parameter()`.
SessionParameter = Literal["first", "second", "keyword"] | None

_current: contextvars.ContextVar[TransactionScope | None] = contextvars.ContextVar(
    "dalkit_transaction", default=None
)


class Callback:
    """A registered callback and where it stands: ``level`` is the savepoint depth that owns
    it; ``undone`` marks a rollback callback whose savepoint rolled back."""

    __slots__ = ("fn", "level", "on_commit", "robust", "undone")

    def __init__(self, fn: Callable[[], object], *, on_commit: bool, robust: bool, level: int):
        self.fn = fn
        self.on_commit = on_commit
        self.robust = robust
        self.level = level
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
        #: set once the transaction has ended: a task or thread that started inside it and
        #: outlives it must never join it (its writes would vanish with no error)
        self.finished = False
        #: the thread or task running the transaction: its session is not safe to share
        self.holder: object = self.current_holder()
        #: per-transaction state of the features built on the runner (cache, replicas)
        self.state: dict[str, Any] | None = None

    @staticmethod
    def current_holder() -> object:
        return threading.get_ident()

    def live(self) -> TransactionScope | None:
        """The innermost transaction among this one and its ancestors still running."""
        for scope in self.ancestors():
            if not scope.finished:
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
    def add(self, fn: Callable[[], object], *, on_commit: bool, robust: bool) -> None:
        if not self.is_async and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{getattr(fn, '__qualname__', fn)} is a coroutine function, but this is a "
                "sync transaction: nothing would await it"
            )
        callback = Callback(fn, on_commit=on_commit, robust=robust, level=self._depth)
        if self.callbacks is None:
            self.callbacks = [callback]
        else:
            self.callbacks.append(callback)

    def savepoint_started(self) -> None:
        self._depth += 1

    def savepoint_released(self) -> None:
        """The savepoint's callbacks now belong to the level around it."""
        if self.callbacks is not None:
            for callback in self.callbacks[self._savepoint_start(self.callbacks) :]:
                callback.level -= 1
        self._depth -= 1

    def savepoint_rolled_back(self) -> None:
        """Its commit callbacks can never run; its rollback callbacks will, at the end."""
        callbacks = self.callbacks
        if callbacks is not None:
            start = self._savepoint_start(callbacks)
            kept = [callback for callback in callbacks[start:] if not callback.on_commit]
            for callback in kept:
                callback.undone = True
                callback.level -= 1
            callbacks[start:] = kept
        self._depth -= 1

    def _savepoint_start(self, callbacks: list[Callback]) -> int:
        """Index of the first callback registered in the innermost open savepoint."""
        start = len(callbacks)
        while start > 0 and callbacks[start - 1].level == self._depth:
            start -= 1
        return start

    def after_commit(self) -> list[Callback]:
        """What runs once the transaction committed: commit callbacks, and rollback callbacks
        of savepoints that rolled back inside it, in registration order."""
        return [c for c in self.callbacks or () if c.on_commit or c.undone]

    def after_rollback(self) -> list[Callback]:
        return [c for c in self.callbacks or () if not c.on_commit]


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
    """
    scope = _require_scope("current_session()")
    if scope.is_async:
        raise NoActiveTransactionError(
            "the running transaction is an async one: use dalkit.current_async_session()"
        )
    session: Session = scope.session
    return session


def current_async_session() -> AsyncSession:
    """The AsyncSession of the innermost running transaction (async API).

    Returns:
        The session of the running `db.session()`, `db.transaction()` or transaction function.

    Raises:
        NoActiveTransactionError: Outside a transaction, or inside a sync one.
    """
    scope = _require_scope("current_async_session()")
    if not scope.is_async:
        raise NoActiveTransactionError(
            "the running transaction is a sync one: use dalkit.current_session()"
        )
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


def check_transaction_function(fn: Callable[..., Any], *, is_async: bool) -> None:
    """Refuse a function whose body would run after its transaction ended: a generator (its
    body runs as it is iterated, later) and, for a sync transaction, a coroutine function
    (nothing awaits it).

    Args:
        fn: The function to run in a transaction.
        is_async: Whether the transaction is an async one.

    Raises:
        TypeError: For such a function.
    """
    late = CO_GENERATOR | CO_ASYNC_GENERATOR | (0 if is_async else CO_COROUTINE)
    if type(fn) is FunctionType and not fn.__code__.co_flags & late:
        return  # a plain function, the common case: one test (the inspect calls: 0.85 us)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        problem = "a generator function: its body would run as it is iterated, after the commit"
    elif not is_async and inspect.iscoroutinefunction(fn):
        problem = "a coroutine function, but this is a sync transaction: nothing would await it"
    else:
        return
    raise TypeError(
        f"{getattr(fn, '__qualname__', fn)} is {problem}; run the transaction inside it, or "
        "collect what it yields into a list and return that"
    )


def session_parameter(fn: Callable[..., Any]) -> SessionParameter:
    """How ``fn`` takes the session: ``"first"`` when ``session`` is its first parameter
    (passed positionally, before the caller's arguments), ``"second"`` when it is the second
    (after ``self`` or ``cls`` in a method decorated in its class body: passed after the first
    argument), ``"keyword"`` when it is declared elsewhere (passed as ``session=``), None when
    it takes none."""
    if type(fn) is FunctionType and "__wrapped__" not in fn.__dict__:
        return _code_session_parameter(fn.__code__, 0)  # a plain function: the common case
    func = getattr(fn, "__func__", None)
    target = inspect.unwrap(func if func is not None else fn)
    code = getattr(target, "__code__", None)
    if isinstance(code, CodeType):
        # a bound method's first name is self, already bound
        return _code_session_parameter(code, 1 if func is not None else 0)
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    for index, parameter in enumerate(parameters):
        if parameter.name != "session":
            continue
        if index == 0 and parameter.kind is not parameter.KEYWORD_ONLY:
            return "first"
        if index == 1 and parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
            return "second"
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            return "keyword"
    return None


# code object -> its answer; there are only as many as the program has functions
@functools.lru_cache(maxsize=1024)
def _code_session_parameter(code: CodeType, bound: int) -> SessionParameter:
    positional = code.co_varnames[bound : code.co_argcount]
    if positional and positional[0] == "session":
        return "first"
    if len(positional) > 1 and positional[1] == "session":
        return "second"
    # keyword-passable names: past the positional-only ones, up to the keyword-only ones
    keyword = code.co_varnames[code.co_posonlyargcount : code.co_argcount + code.co_kwonlyargcount]
    return "keyword" if "session" in keyword else None
