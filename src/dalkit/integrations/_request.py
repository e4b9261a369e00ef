"""One HTTP request under DatabaseMiddleware: its transaction (opened where the application
runs, ended before the response starts) and where its response stands."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database, audit
from dalkit.integrations import _ending, _holders
from dalkit.integrations._holders import SERVING, RequestHolder, TaskHolder
from dalkit.integrations.errors import RequestCommitError
from dalkit.integrations.problems import commit_problem, problem_headers
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
log = logging.getLogger("dalkit.web")


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


# the messages that may end a response's body (a file sent by path ends it at once)
_LAST_BODY = frozenset(
    {"http.response.body", "http.response.zerocopysend", "http.response.pathsend"}
)
STATE_KEY = "dalkit_db"
"""The key under ``scope["state"]`` (``request.state.dalkit_db``) naming the request's database."""
HOOKS_KEY = "dalkit_before_commit"


class Rollback(Exception):
    """Thrown into the transaction to roll it back without an error of the application's."""


class Transaction:
    """One ``db.transaction()``, opened in the application's own task (so the application
    holds it, and may join it) and ended inside the request's context, which makes it vanish
    for the application too."""

    def __init__(self, request: Request) -> None:
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
                return await _finish(asyncio.create_task(ending, context=self.context))
            else:
                # COMMIT blocks, so hooks and COMMIT run in a thread, inside the request's
                # context, while the thread that ran the endpoint has handed the session back
                for var, value in self.context.items():  # what the request set since
                    if var is not _CURRENT:
                        self._private.run(var.set, value)
                work = anyio.to_thread.run_sync(
                    self._private.run,
                    self._end_sync,
                    error,
                    hooks,
                    limiter=self.middleware.limiter(),
                )
                return await _finish(asyncio.create_task(work))
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


class Request:
    """One HTTP request going through the middleware: its transaction, and where its response
    stands."""

    def __init__(self, middleware: Middleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self._receive = receive
        self._send = send
        self.context = contextvars.copy_context()
        self.holder = RequestHolder(middleware.db, scope.setdefault("state", {}))
        self.context.run(SERVING.set, self.holder)
        self.read_only = scope.get("method", "") in middleware.read_only_methods
        self.transaction: Transaction | None = None
        self.app_task: asyncio.Task[None] | None = None
        self.background = False
        self.joined_by: object = _holders.FOREGROUND  # the next transaction's ending
        self.started: asyncio.Event | None = None  # set once the response started it ended
        self.commit_failed = False
        self.hooks: list[BeforeCommit] = []
        self.tokens = middleware.replica_tokens
        self.token_before: str | None = None  # the replica token the request started with

    async def run(self) -> None:
        scope = self.scope
        state = scope.setdefault("state", {})
        state[STATE_KEY] = self.middleware.db
        state[HOOKS_KEY] = self.hooks = []
        exits: list[Callable[[Any, Any, Any], object]] = []
        actor, request_id = self.middleware.who(scope)
        # an async function's coroutine, recorded as it is, would name no one
        if inspect.isawaitable(actor):
            actor = await actor
        if inspect.isawaitable(request_id):
            request_id = await request_id
        if actor is not None or request_id is not None:
            try:
                acting = audit.actor(actor, request_id)
                self.context.run(acting.__enter__)
            except audit.AuditActorError as error:
                # the application's function gave it, per request (a user's long email):
                # failing every request of that user would hide it; the writes it would
                # misname are refused instead, each with the error
                acting = audit.refused_actor(
                    f"{error} (given by DatabaseMiddleware's actor or request_id function): "
                    "the request's audited writes are refused"
                )
                self.context.run(acting.__enter__)
            exits.append(acting.__exit__)
        if self.tokens is not None:
            # reads of this request wait for the client's last write (another process' maybe)
            reading = self.middleware.db.read_your_writes(self.tokens.read(scope))
            self.context.run(reading.__enter__)
            exits.append(reading.__exit__)
            self.token_before = self.context.run(self.middleware.db.replica_token)
        try:
            await self._run()
        finally:
            for leave in reversed(exits):
                self.context.run(leave, None, None, None)

    async def _run(self) -> None:
        # the application runs in a task of its own, in the request's context: the
        # transaction it opens there is visible to it, and can be ended from here
        self.app_task = app = asyncio.create_task(self._app(), context=self.context)
        try:
            # cancelling this task cancels the application's, and waits for it to unwind
            await app
        except BaseException as error:
            await self._end(error)
            if self.commit_failed and not isinstance(error, asyncio.CancelledError):
                log.debug("the application raised after its commit failed", exc_info=True)
                return  # the client has its 500 already
            raise
        await self._end(None)

    async def _app(self) -> None:
        self.transaction = Transaction(self)
        await self.transaction.enter()
        await self.middleware.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" and self.started is not None:
            # the client went away after the response started: what the application runs
            # next (its background tasks, as Starlette runs them) runs after the response,
            # once the request's transaction has ended; the body may run on, apart from them
            await self.started.wait()
            if not self.commit_failed:
                await self._begin_background(body_over=False)
        return message

    async def send(self, message: Message) -> None:
        if self.commit_failed:
            raise RequestCommitError("this request's response was replaced by a 500")
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        else:
            await self._send(message)
            if kind in _LAST_BODY and not message.get("more_body", False):
                await self._begin_background()

    async def _start(self, message: Message) -> None:
        transaction, self.transaction = self.transaction, None
        if transaction is None:  # a second start: the server will refuse it
            await self._send(message)
            return
        self.started = started = asyncio.Event()
        try:
            message = await self._end_at_start(transaction, message)
        finally:
            started.set()
        await self._send(message)

    async def _end_at_start(self, transaction: Transaction, message: Message) -> Message:
        """Commit, or roll back for the response's status; returns the start message to send."""
        status = int(message["status"])
        try:
            rollback = self.middleware.rollback_for(status)
            if inspect.isawaitable(rollback):  # an async function's coroutine is always true
                rollback = await rollback
        except BaseException as error:  # the application's function: its error, rolled back
            await transaction.exit(error)
            raise
        if rollback:
            await transaction.exit(Rollback(f"the response status is {status}"))
            return message
        try:
            token = await transaction.exit(None, hooks=self.hooks)
        except Exception as error:
            await self._commit_failed(error, status)
        if self.tokens is not None and token not in (None, self.token_before):
            message = self.tokens.give(self.scope, message, str(token))  # the request wrote
        return message

    async def _commit_failed(self, error: Exception, status: int) -> None:
        self.commit_failed = True
        log.error(
            "the transaction of %s %s failed to commit; answering 500 instead of %d",
            self.scope.get("method"),
            self.scope.get("path"),
            status,
            exc_info=True,
        )
        body = commit_problem(error)
        await self._send(
            {"type": "http.response.start", "status": 500, "headers": problem_headers(body)}
        )
        await self._send({"type": "http.response.body", "body": body})
        raise RequestCommitError(
            "the request's transaction failed to commit; the client was sent a 500"
        ) from error

    async def _begin_background(self, *, body_over: bool = True) -> None:
        if not self.middleware.background_transaction or self.background:
            return
        self.background, self.read_only = True, False
        self.joined_by = None if body_over else _holders.background_only()
        self.transaction = Transaction(self)
        if asyncio.current_task() is self.app_task:
            await self.transaction.enter()
            return
        # the body came from a task of its own (Starlette streams StreamingResponse and
        # FileResponse so under uvicorn): the background tasks still run in the application's
        # task, so the transaction is opened in its context (and is, even when the task group
        # streaming the body cancels this task as it ends)
        await _finish(asyncio.create_task(self.transaction.enter(), context=self.context))

    async def _end(self, error: BaseException | None) -> None:
        """End whatever transaction is still open once the application is done."""
        transaction, self.transaction = self.transaction, None
        if transaction is None or transaction.session is None:  # none, or never opened
            return
        if not self.background:
            # the application ended without starting a response: nothing to confirm
            await transaction.exit(error or Rollback("no response was sent"))
            return
        try:
            await transaction.exit(error, close=False)
        except Exception:
            log.exception("the transaction of the background tasks failed to commit")


def _adopt(private: contextvars.Context, shown: contextvars.Token[Any]) -> None:
    """In the request's context: what the committing thread set (a replica position), and the
    transaction no longer shown."""
    for var, value in private.items():
        if var is not _CURRENT:
            var.set(value)
    exit_scope(shown)


def _exc_info(error: BaseException | None) -> tuple[Any, Any, Any]:
    return (None, None, None) if error is None else (type(error), error, error.__traceback__)


def _discard(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):  # a coroutine never awaited would warn
        close()


async def _finish(task: asyncio.Task[T]) -> T:
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
