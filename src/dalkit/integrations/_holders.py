"""Who holds a request's transaction under DatabaseMiddleware: the request's code in whichever
thread (sync Database) it runs, or the task running the request's application (AsyncDatabase),
and whether a request runs under a middleware of a database already."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Mapping, MutableMapping
from types import FrameType
from typing import Any

from dalkit import AsyncDatabase, Database

# the request whose code runs in this context: a worker thread running a sync endpoint or
# dependency of the request gets a copy of the request's context, and so this value
SERVING: contextvars.ContextVar[RequestHolder | None] = contextvars.ContextVar(
    "dalkit_web_request", default=None
)


class RequestHolder:
    """The holder of a sync Database's request transaction: the request's own code, in
    whichever thread it runs (any context copied from the request's). Starlette and FastAPI
    hand a sync endpoint or dependency to one worker thread at a time and wait for it, so the
    session passes between threads but is never used by two at once. A ``threading.Thread``
    starts with a context of its own, so it sees no request transaction at all; work handed to
    ``asyncio.to_thread`` copies the request's context and may join, like an endpoint's
    thread, so it must be awaited before the request's code uses the session again. ``db`` and
    ``state`` (the ASGI scope's) name the request."""

    __slots__ = ("db", "state")

    def __init__(self, db: Database | AsyncDatabase, state: object) -> None:
        self.db = db
        self.state = state

    def __eq__(self, other: object) -> bool:  # != follows, inverted
        return other is self or SERVING.get() is self

    __hash__ = object.__hash__


class TaskHolder:
    """The holder of an AsyncDatabase's request transaction: the task that runs the
    application for the request (``app``), or a task of its own that runs the request's
    application in turn (an inner ``BaseHTTPMiddleware`` runs the endpoint so), whichever of
    them joins first, and that task alone. A task the request's code starts (``create_task``,
    ``gather``, a task group) runs no application: it never holds the request's session, even
    when it asks before the request's own code did, so that it neither shares the session
    side by side nor takes the transaction from the endpoint."""

    __slots__ = ("app", "request", "task")

    def __init__(self, request: RequestHolder, app: object) -> None:
        self.request = request
        self.app = app
        self.task: object = None

    def __eq__(self, other: object) -> bool:
        if other is self or (self.task is not None and other is self.task):
            return True
        # the joining task compares itself with its holder (TransactionScope.check_holder)
        if (
            self.task is None
            and SERVING.get() is self.request
            and (other is self.app or (other is _current_task() and _runs_application(self)))
        ):
            self.task = other
            return True
        return False

    __hash__ = object.__hash__


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # a worker thread: no loop, no task
        return None


def _runs_application(holder: TaskHolder) -> bool:
    """Whether the running task runs an ASGI application for ``holder``'s request: one of its
    calls has the request's ``scope`` (middlewares pass it on, or a copy sharing its
    ``state``), which a task the request's code starts has not."""
    state = holder.request.state
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if (
            "scope" in code.co_varnames
            or "scope" in code.co_freevars
            or "scope" in code.co_cellvars
        ):
            scope = frame.f_locals.get("scope")
            if isinstance(scope, Mapping) and scope.get("state") is state:
                return True
        frame = frame.f_back
    return False


def serving(db: Database | AsyncDatabase, scope: MutableMapping[str, Any]) -> bool:
    """Whether this request runs under a DatabaseMiddleware of ``db`` already (a mounted
    sub-application with a middleware of its own): its transaction is the request's."""
    holder = SERVING.get()
    return holder is not None and holder.db is db and holder.state is scope.get("state")
