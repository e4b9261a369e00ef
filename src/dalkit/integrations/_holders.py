"""Who holds a request's transaction under DatabaseMiddleware: the request's code in whichever
thread (sync Database) or first joining task (AsyncDatabase) it runs, and whether a request
runs under a middleware of a database already."""

from __future__ import annotations

import contextvars
from collections.abc import MutableMapping
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
    """The holder of an AsyncDatabase's request transaction: the first task of the request
    that joins it (an inner ``BaseHTTPMiddleware`` runs the endpoint in a task of its own, not
    the one that opened the transaction), and that task alone, so that tasks the request's
    code runs side by side never share its session."""

    __slots__ = ("request", "task")

    def __init__(self, request: RequestHolder) -> None:
        self.request = request
        self.task: object = None

    def __eq__(self, other: object) -> bool:
        if other is self or (self.task is not None and other is self.task):
            return True
        if self.task is None and SERVING.get() is self.request:
            self.task = other  # the joining task compares itself with its holder
            return True
        return False

    __hash__ = object.__hash__


def serving(db: Database | AsyncDatabase, scope: MutableMapping[str, Any]) -> bool:
    """Whether this request runs under a DatabaseMiddleware of ``db`` already (a mounted
    sub-application with a middleware of its own): its transaction is the request's."""
    holder = SERVING.get()
    return holder is not None and holder.db is db and holder.state is scope.get("state")
