"""One HTTP request under DatabaseMiddleware: where its response stands, and so when its
transaction (``_transaction``) ends and the background tasks' begins."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable
from typing import Any

from dalkit import audit
from dalkit.integrations import _holders
from dalkit.integrations._holders import SERVING, RequestHolder
from dalkit.integrations._transaction import (
    BeforeCommit,
    Message,
    Middleware,
    Receive,
    Rollback,
    Scope,
    Send,
    Transaction,
    finish,
)
from dalkit.integrations.errors import RequestCommitError
from dalkit.integrations.problems import commit_problem, problem_headers

__all__ = ["HOOKS_KEY", "STATE_KEY", "BeforeCommit", "Receive", "Request", "Scope", "Send"]
log = logging.getLogger("dalkit.web")


# the messages that may end a response's body (a file sent by path ends it at once)
_LAST_BODY = frozenset(
    {"http.response.body", "http.response.zerocopysend", "http.response.pathsend"}
)
STATE_KEY = "dalkit_db"
"""The key under ``scope["state"]`` (``request.state.dalkit_db``) naming the request's database."""
HOOKS_KEY = "dalkit_before_commit"


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
        self.holder.task_ended = self._background_task_ended
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
            self.holder.task_ended = None  # no cycle through it keeps the request alive
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
            self.scope["state"][HOOKS_KEY] = ()  # before_commit() refuses late hooks
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
        await finish(asyncio.create_task(self.transaction.enter(), context=self.context))

    async def _background_task_ended(self, error: Exception | None) -> None:
        """One background task returned, or raised ``error``: its transaction commits, or
        rolls back, and the next task gets a new one, so that none takes another's work with
        it, or waits for the others to end before its writes are seen."""
        transaction = self.transaction
        if not self.background or transaction is None or transaction.session is None:
            return  # run before the response reached the middleware: no transaction is theirs
        self.transaction = None
        try:
            await transaction.exit(error)
        finally:
            self.background = False
            await self._begin_background(body_over=self.joined_by is None)

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
