"""The transaction of one HTTP request under DatabaseMiddleware: opened where the application
runs, ended (hooks, COMMIT or ROLLBACK) from the request's context, in a task or thread of its
own, even when the request is cancelled meanwhile."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.integrations import _ending
from dalkit.integrations._holders import IN_BACKGROUND, RequestHolder, TaskHolder
from dalkit.integrations.replica_tokens import ReplicaTokens
from dalkit.transaction.scope import TransactionScope, current_scope, enter_scope, exit_scope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
BeforeCommit = Callable[[], object]
"""A hook run just before the request's transaction commits (see ``before_commit``)."""

T = TypeVar("T")
_CURRENT: contextvars.ContextVar[Any] = getattr(current_scope, "__self__")  # noqa: B009
# what the committing thread's context never takes from the request's, nor gives back: the
# transaction shown, and whether a background task runs (one may, beside a commit)
_OWN: frozenset[contextvars.ContextVar[Any]] = frozenset({_CURRENT, IN_BACKGROUND})


class Middleware(Protocol):
    """What a request needs of DatabaseMiddleware (which imports this module)."""

    app: Callable[[Scope, Receive, Send], Awaitable[None]]
    db: Database | AsyncDatabase
    rollback_for: Callable[[int], bool | Awaitable[bool]]
    background_transaction: bool
    replica_tokens: ReplicaTokens | None
    read_only_methods: frozenset[str]

    def limiter(self) -> anyio.CapacityLimiter: ...

    def who(self, scope: Scope) -> tuple[object | None, object | None]: ...


class Serving(Protocol):
    """What a transaction needs of its request (``_request.Request``)."""

    middleware: Middleware
    context: contextvars.Context
    read_only: bool
    holder: RequestHolder
    app_task: asyncio.Task[None] | None
    joined_by: object
    background: bool


class Rollback(Exception):
    """Thrown into the transaction to roll it back without an error of the application's."""


class Transaction:
    """One ``db.transaction()``, opened in the application's own task (so the application
    holds it, and may join it) and ended inside the request's context, which makes it vanish
    for the application too."""

    def __init__(self, request: Serving) -> None:
        self.request = request
        self.middleware = request.middleware
        self.context = request.context
        self.session: Session | AsyncSession | None = None
        self.scope: TransactionScope | None = None
        self._private = self.context  # a sync Database's transaction runs in a copy of it
        self._shown: contextvars.Token[Any] | None = None
        self._manager: Any = self.middleware.db.transaction(read_only=request.read_only)

    async def enter(self) -> None:
        """Open the transaction (no I/O until the first statement) in the request's context,
        which the application's task runs in, and hand it to the request's code."""
        if isinstance(self.middleware.db, AsyncDatabase):
            self.session = await self._manager.__aenter__()
        else:
            # opened in a copy of the request's context that only the committing thread enters
            # later: the application's task may wake meanwhile (a body sent from another task
            # and the client gone), and one context cannot be entered twice at once
            self._private = contextvars.copy_context()
            self.session = self._private.run(self._manager.__enter__)
            self._shown = enter_scope(self._private.run(current_scope))
        assert self.session is not None
        _ending.watch(self.session, foreground=not self.request.background)
        scope = current_scope()
        if scope is not None and scope.session is self.session:
            self.scope, holder = scope, self.request.holder
            if isinstance(self.session, Session):
                scope.holder = holder
            else:
                scope.holder = TaskHolder(holder, self.request.app_task)
            scope.ending = self.request.joined_by  # who may join it (_holders.Within)

    async def exit(
        self,
        error: BaseException | None,
        *,
        hooks: Sequence[BeforeCommit] = (),
        close: bool = True,
    ) -> str | None:
        """Run ``hooks`` then commit (``error`` None), or roll back; raises what a failed
        hook or commit raised. Runs in a task or thread of its own inside the request's
        context, while the application's task waits (or after it ended). Returns the
        database's replica token as the request's context has it afterwards."""
        try:
            if isinstance(self.middleware.db, AsyncDatabase):
                ending = self._end_async(error, hooks)
                return await finish(asyncio.create_task(ending, context=self.context))
            else:
                # COMMIT blocks, so hooks and COMMIT run in a thread, inside the request's
                # context, while the thread that ran the endpoint has handed the session back
                for var, value in self.context.items():  # what the request set since
                    if var not in _OWN:
                        self._private.run(var.set, value)
                work = anyio.to_thread.run_sync(
                    self._private.run,
                    self._end_sync,
                    error,
                    hooks,
                    limiter=self.middleware.limiter(),
                )
                return await finish(asyncio.create_task(work))
        finally:
            if self._shown is not None:
                shown, self._shown = self._shown, None
                if asyncio.current_task() is self.request.app_task:
                    _adopt(self._private, shown)  # running in the request's context
                else:
                    self.context.run(_adopt, self._private, shown)
            if close and self.session is not None:
                _ending.refuse_further_use(self.session)

    async def _end_async(
        self, error: BaseException | None, hooks: Sequence[BeforeCommit]
    ) -> str | None:
        assert isinstance(self.session, AsyncSession)
        # a task the request did not await may use it
        await _ending.settle(self.session, self.scope)
        if error is None:
            try:
                for hook in hooks:
                    result = hook()
                    if inspect.isawaitable(result):
                        await result
            except BaseException as failed:
                await self._manager.__aexit__(type(failed), failed, failed.__traceback__)
                raise
        await self._manager.__aexit__(*_exc_info(error))
        return self.middleware.db.replica_token()

    def _end_sync(self, error: BaseException | None, hooks: Sequence[BeforeCommit]) -> str | None:
        assert isinstance(self.session, Session)
        # a thread the request did not await may use it
        _ending.settle_sync(self.session, self.scope)
        if error is None:
            try:
                for hook in hooks:
                    if inspect.isawaitable(result := hook()):
                        _discard(result)
                        raise TypeError(
                            f"before_commit hook {getattr(hook, '__qualname__', hook)} returned "
                            "an awaitable, but a sync Database runs its hooks in a thread"
                        )
            except BaseException as failed:
                self._manager.__exit__(type(failed), failed, failed.__traceback__)
                raise
        self._manager.__exit__(*_exc_info(error))
        return self.middleware.db.replica_token()


def _adopt(private: contextvars.Context, shown: contextvars.Token[Any]) -> None:
    """In the request's context: what the committing thread set (a replica position), and the
    transaction no longer shown."""
    for var, value in private.items():
        if var not in _OWN:
            var.set(value)
    exit_scope(shown)


def _exc_info(error: BaseException | None) -> tuple[Any, Any, Any]:
    return (None, None, None) if error is None else (type(error), error, error.__traceback__)


def _discard(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):  # a coroutine never awaited would warn
        close()


async def finish(task: asyncio.Task[T]) -> T:
    """Wait for ``task`` to end even when cancelled meanwhile (a commit or rollback half done
    helps nobody); a cancellation received while waiting is raised afterwards."""
    interrupted: asyncio.CancelledError | None = None
    with anyio.CancelScope(shield=True):
        while True:
            try:
                result = await asyncio.shield(task)
                break
            except asyncio.CancelledError as cancelled:
                if task.done():
                    raise
                interrupted = cancelled
    if interrupted is not None:
        raise interrupted
    return result
