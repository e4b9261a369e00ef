"""DatabaseMiddleware: one dalkit transaction per HTTP request, committed before the response
starts, so that a client never receives a success for data that was not saved.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncDatabase,
    ConfigurationError,
    Database,
    NoActiveTransactionError,
    audit,
)
from dalkit.integrations.errors import RequestCommitError, ResponseStartedError
from dalkit.integrations.problems import problem_headers, problem_json

__all__ = ["ASGIApp", "DatabaseMiddleware", "before_commit", "rollback_on_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: a header name, or a function of the ASGI scope (its ``state``, ``user``, ...)
ScopeReader = str | Callable[[Scope], object | None] | None

T = TypeVar("T")
log = logging.getLogger("dalkit.web")

#: the key under ``scope["state"]`` (``request.state.dalkit_db``) naming the request's database
STATE_KEY = "dalkit_db"
_HOOKS_KEY = "dalkit_before_commit"
BeforeCommit = Callable[[], Awaitable[object]]


def before_commit(scope: Scope, fn: BeforeCommit) -> None:
    """Await ``fn()`` just before the request's transaction commits (not if it rolls back),
    in registration order: for work that must end inside the transaction, such as a unit of
    work a dependency opened. A hook that raises makes the commit fail (a 500)."""
    hooks = scope.get("state", {}).get(_HOOKS_KEY)
    if hooks is None:
        raise NoActiveTransactionError(
            "before_commit() needs a request running under DatabaseMiddleware"
        )
    hooks.append(fn)


def rollback_on_error(status: int) -> bool:
    """The default ``rollback_for``: a 4xx or 5xx response rolls the request's work back."""
    return status >= 400


class DatabaseMiddleware:
    """Runs each HTTP request in one ``db.transaction()`` that ``current_session()``,
    repositories and units of work join.

    The transaction commits before ``http.response.start`` is passed on, or rolls back when
    ``rollback_for(status)`` says so; a commit that fails sends a problem+json 500 in place of
    the application's response. Streaming bodies run after the commit, where the request's
    session refuses further use; work after the response (background tasks) gets a transaction
    of its own. Websocket and lifespan scopes pass through untouched.

    ``actor`` and ``request_id`` name a request header or give a function of the ASGI scope;
    the audit log records them for every change of the request.
    """

    def __init__(
        self,
        app: ASGIApp,
        db: Database | AsyncDatabase,
        *,
        rollback_for: Callable[[int], bool] = rollback_on_error,
        actor: ScopeReader = None,
        request_id: ScopeReader = "x-request-id",
        background_transaction: bool = True,
        commit_threads: int = 40,
    ) -> None:
        if not isinstance(db, Database | AsyncDatabase):
            raise ConfigurationError(
                f"DatabaseMiddleware expected a dalkit Database or AsyncDatabase, "
                f"got {type(db).__name__}"
            )
        _install_refusal()
        self.app = app
        self.db = db
        self.rollback_for = rollback_for
        self.background_transaction = background_transaction
        self._actor = _reader(actor, "actor")
        self._request_id = _reader(request_id, "request_id")
        self._commit_threads = commit_threads
        # a sync Database commits in threads of its own: were they shared with the endpoints',
        # endpoints waiting for a pooled connection could hold every thread the commits that
        # would free one need
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Request(self, scope, receive, send).run()

    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._commit_threads)
        return self._limiter

    def who(self, scope: Scope) -> tuple[object | None, object | None]:
        return self._actor(scope), self._request_id(scope)


class _Rollback(Exception):
    """Thrown into the transaction to roll it back without an error of the application's."""


class _Transaction:
    """One ``db.transaction()``, opened in the application's own task (so the application
    holds it, and may join it) and ended inside the request's context, which makes it vanish
    for the application too."""

    def __init__(self, middleware: DatabaseMiddleware, context: contextvars.Context) -> None:
        self.middleware = middleware
        self.context = context
        self.session: Session | AsyncSession | None = None
        self._manager: Any = middleware.db.transaction()

    async def enter(self) -> None:
        """Open the transaction; called in the application's task, whose context it is."""
        if isinstance(self.middleware.db, AsyncDatabase):
            self.session = await self._manager.__aenter__()
        else:
            self.session = self._manager.__enter__()  # no I/O until the first statement

    async def exit(self, error: BaseException | None, *, close: bool = True) -> None:
        """Commit (``error`` None) or roll back; raises what a failed commit raised. Runs in
        a task or thread of its own inside the request's context, while the application's
        task waits (or after it ended)."""
        args = (None, None, None) if error is None else (type(error), error, error.__traceback__)
        try:
            if isinstance(self.middleware.db, AsyncDatabase):
                ending = self._manager.__aexit__(*args)
                await _finish(asyncio.create_task(ending, context=self.context))
            else:
                # COMMIT blocks, so it runs in a thread, still inside the request's context
                work = anyio.to_thread.run_sync(
                    self.context.run,
                    self._manager.__exit__,
                    *args,
                    limiter=self.middleware.limiter(),
                )
                await _finish(asyncio.create_task(work))
        finally:
            if close and self.session is not None:
                _refuse_further_use(self.session)


class _Request:
    """One HTTP request going through the middleware: its transaction, and where its response
    stands."""

    def __init__(
        self, middleware: DatabaseMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.receive = receive
        self._send = send
        self.context = contextvars.copy_context()
        self.transaction: _Transaction | None = None
        self.app_task: asyncio.Task[None] | None = None
        self.background = False
        self.commit_failed = False
        self.hooks: list[BeforeCommit] = []

    async def run(self) -> None:
        scope = self.scope
        state = scope.setdefault("state", {})
        state[STATE_KEY] = self.middleware.db
        state[_HOOKS_KEY] = self.hooks = []
        actor, request_id = self.middleware.who(scope)
        if actor is None and request_id is None:
            await self._run()
            return
        acting = audit.actor(actor, request_id)
        self.context.run(acting.__enter__)
        try:
            await self._run()
        finally:
            self.context.run(acting.__exit__, None, None, None)

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
        self.transaction = _Transaction(self.middleware, self.context)
        await self.transaction.enter()
        await self.middleware.app(self.scope, self.receive, self.send)

    async def send(self, message: Message) -> None:
        if self.commit_failed:
            raise RequestCommitError("this request's response was replaced by a 500")
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and not message.get("more_body", False):
            await self._send(message)
            await self._begin_background()
        else:
            await self._send(message)

    async def _start(self, message: Message) -> None:
        transaction, self.transaction = self.transaction, None
        if transaction is None:  # a second start: the server will refuse it
            await self._send(message)
            return
        status = int(message["status"])
        if self.middleware.rollback_for(status):
            await transaction.exit(_Rollback(f"the response status is {status}"))
        else:
            try:
                await self._commit(transaction)
            except Exception as error:
                self.commit_failed = True
                log.error(
                    "the transaction of %s %s failed to commit; answering 500 instead of %d",
                    self.scope.get("method"),
                    self.scope.get("path"),
                    status,
                    exc_info=True,
                )
                body = problem_json(500, "the changes of this request could not be saved")
                await self._send(
                    {"type": "http.response.start", "status": 500, "headers": problem_headers(body)}
                )
                await self._send({"type": "http.response.body", "body": body})
                raise RequestCommitError(
                    "the request's transaction failed to commit; the client was sent a 500"
                ) from error
        await self._send(message)

    async def _commit(self, transaction: _Transaction) -> None:
        try:
            for hook in self.hooks:
                await hook()
        except BaseException as error:
            await transaction.exit(error)
            raise
        await transaction.exit(None)

    async def _begin_background(self) -> None:
        if not self.middleware.background_transaction or self.background:
            return
        self.background = True
        # background tasks run in the application's task once the response is out; a body
        # streamed from another task leaves them to open their own transactions
        if asyncio.current_task() is self.app_task:
            self.transaction = _Transaction(self.middleware, self.context)
            await self.transaction.enter()

    async def _end(self, error: BaseException | None) -> None:
        """End whatever transaction is still open once the application is done."""
        transaction, self.transaction = self.transaction, None
        if transaction is None or transaction.session is None:  # none, or never opened
            return
        if not self.background:
            # the application ended without starting a response: nothing to confirm
            await transaction.exit(error or _Rollback("no response was sent"))
            return
        try:
            await transaction.exit(error, close=False)
        except Exception:
            log.exception("the transaction of the background tasks failed to commit")


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


_ENDED = "dalkit.request_transaction_ended"


def _refuse_ended(session: Session, transaction: Any) -> None:
    # every statement, flush, add() and connection() first begins a transaction
    if session.info.get(_ENDED):
        raise ResponseStartedError(
            "the request's transaction ended when its response started (committed, or rolled "
            "back for an error status): this session cannot be used any more; open a new "
            "transaction with db.transaction() for later work"
        )


def _install_refusal() -> None:
    """One listener for every session, which checks a flag: listening on each request's
    session instead costs more than the request's own statements."""
    if not event.contains(Session, "after_transaction_create", _refuse_ended):
        event.listen(Session, "after_transaction_create", _refuse_ended)


def _refuse_further_use(session: Session | AsyncSession) -> None:
    """Make the ended transaction's session refuse statements, flushes and new objects, so
    late work (a streaming body writing) fails loudly instead of being lost or left open."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info[_ENDED] = True


def _reader(spec: ScopeReader, what: str) -> Callable[[Scope], object | None]:
    if spec is None:
        return lambda scope: None
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec:
        name = spec.lower().encode("latin-1")

        def header(scope: Scope) -> object | None:
            for key, value in scope.get("headers", ()):
                if key == name:
                    return bytes(value).decode("latin-1")
            return None

        return header
    raise ConfigurationError(f"{what} must be a header name, a function of the ASGI scope, or None")
