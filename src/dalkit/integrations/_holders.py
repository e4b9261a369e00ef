"""Who holds a request's transaction under DatabaseMiddleware: the request's code in whichever
thread (sync Database) it runs, or the task running the request's application (AsyncDatabase),
never a background task of its response; and whether a request runs under a middleware of a
database already."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from types import FrameType
from typing import Any

from dalkit import AsyncDatabase, Database
from dalkit.transaction.binds import directly_awaits

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
    ``state`` (the ASGI scope's) name the request; ``task_ended`` is awaited as each of its
    background tasks returns (None) or raises (the error)."""

    __slots__ = ("db", "state", "task_ended")

    def __init__(self, db: Database | AsyncDatabase, state: object) -> None:
        self.db = db
        self.state = state
        self.task_ended: Callable[[Exception | None], Awaitable[None]] | None = None

    def __eq__(self, other: object) -> bool:  # != follows, inverted
        return other is self or SERVING.get() is self

    __hash__ = object.__hash__


class TaskHolder:
    """The holder of an AsyncDatabase's request transaction: the task that runs the
    application for the request (``app``), a task of its own that runs the request's
    application in turn (an inner ``BaseHTTPMiddleware`` runs the endpoint so), or a task one
    of them waits for alone (``asyncio.wait_for``'s, before Python 3.12): whichever joins
    first, and that task alone until it ends. A task the request's code starts and runs beside
    its own (``create_task``, ``gather``, a task group) never holds the request's session,
    even when it asks before the request's own code did, so that it neither shares the
    session side by side nor takes the transaction from the endpoint. Once the transaction
    begins to end, the task ending it holds it: the ``before_commit`` hooks run there."""

    __slots__ = ("app", "request", "task")

    def __init__(self, request: RequestHolder, app: object) -> None:
        self.request = request
        self.app = app
        self.task: asyncio.Task[Any] | None = None

    def __eq__(self, other: object) -> bool:
        if other is self or (self.task is not None and other is self.task):
            return True
        # the joining task compares itself with its holder (TransactionScope.check_holder);
        # a task that ended holds nothing any more: the application takes the session back
        if (
            (self.task is None or self.task.done())
            and SERVING.get() is self.request
            and (other is self.app or (other is _current_task() and self._may_hold(other)))
        ):
            self.task = other  # type: ignore[assignment]  # a task: the app's or the running one
            return True
        return False

    __hash__ = object.__hash__

    def _may_hold(self, task: object) -> bool:
        """Whether ``task``, the running one, runs the request's application, or runs for a
        task that does and waits for it alone (``asyncio.wait_for`` runs its coroutine in a
        task of its own before Python 3.12)."""
        state = self.request.state
        if _runs_application(_running_frames(), state):
            return True
        for waiting in asyncio.all_tasks():
            if _awaits(waiting, task) and (
                waiting is self.app or _runs_application(_suspended_frames(waiting), state)
            ):
                return True
        return False


class Within:
    """The ``ending`` of a request's transaction while it runs (``TransactionScope.live()``
    compares it with the task or thread asking): the transaction is running to the code inside
    a Starlette background task (in the context ``install()`` marks as it starts, which every
    task and thread it starts copies) when ``background``, to the code outside one when not,
    and has ended to the others.

    The request's own transaction is ``FOREGROUND``: Starlette runs a response's background
    tasks right after its last body message is sent, which reaches the middleware only later,
    or never, when a middleware inside it holds the response back (one that buffers the body,
    or a ``BaseHTTPMiddleware`` whose client left); they would write in the request's
    transaction before it commits, or rolls back for the response's status. The background
    tasks' transaction, opened when the client leaves mid-body, is ``BACKGROUND``: the body
    itself may still run and see the departure (``request.is_disconnected()``), and its
    ``db.transaction()`` is one of its own, not the background tasks', which rolls back with
    the ``ClientDisconnect`` its next send raises."""

    __slots__ = ("background",)

    def __init__(self, background: bool) -> None:
        self.background = background

    def __eq__(self, other: object) -> bool:
        return in_background() is self.background

    __hash__ = object.__hash__


FOREGROUND = Within(background=False)
BACKGROUND = Within(background=True)


def background_only() -> Within | None:
    """The ``ending`` of the background tasks' transaction opened as the client leaves
    mid-body: joined by Starlette's background tasks alone, and by anything without Starlette,
    where nothing tells the background tasks from the body (another framework's).

    Returns:
        ``BACKGROUND``, or None without Starlette.
    """
    return BACKGROUND if _MARKING else None


# whether the code of this context runs inside a Starlette background task: set as one starts,
# so that the tasks and threads it starts (create_task, a task group, to_thread, from_thread),
# which copy its context, inherit it
IN_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dalkit_web_background", default=False
)
_MARKING = False  # Starlette's background tasks mark it (install() found Starlette)


def in_background() -> bool:
    """Whether the caller runs inside a Starlette background task, or in a task or thread one
    started (which copied its context).

    Returns:
        True under ``starlette.background.BackgroundTask.__call__``.
    """
    return IN_BACKGROUND.get()


def install() -> None:
    """Mark the context of every Starlette background task as it runs (installed once, when
    Starlette is there): its code, and all it starts, then tells itself from the request's;
    and tell the request as each task ends (``RequestHolder.task_ended``).

    Why a patch: Starlette offers no hook around a background task, and nothing else sees all
    of them (a middleware's ``send`` misses the ones a buffering middleware runs before the
    last body reaches it; a stack walk misses threads and tasks started from one)."""
    global _MARKING
    if _MARKING:
        return
    try:
        background = importlib.import_module("starlette.background")
    except ImportError:
        return
    task_class: Any = background.BackgroundTask
    call = task_class.__call__

    @functools.wraps(call)
    async def marked(self: object) -> None:
        if IN_BACKGROUND.get():  # run by another background task: part of its work
            await call(self)
            return
        token = IN_BACKGROUND.set(True)
        try:
            await call(self)
        except Exception as error:
            IN_BACKGROUND.reset(token)
            await _background_task_ended(error)
            raise
        except BaseException:  # cancelled: the request's end rolls its work back
            IN_BACKGROUND.reset(token)
            raise
        IN_BACKGROUND.reset(token)
        await _background_task_ended(None)

    task_class.__call__ = marked
    _MARKING = True


async def _background_task_ended(error: Exception | None) -> None:
    holder = SERVING.get()
    if holder is not None and holder.task_ended is not None:
        await holder.task_ended(error)


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # a worker thread: no loop, no task
        return None


def _running_frames() -> Iterator[FrameType]:
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back


def _suspended_frames(task: asyncio.Task[Any]) -> Iterator[FrameType]:
    coroutine: Any = task.get_coro()
    while inspect.iscoroutine(coroutine) and coroutine.cr_frame is not None:
        yield coroutine.cr_frame
        coroutine = coroutine.cr_await


def _awaits(waiting: asyncio.Task[Any], task: object) -> bool:
    """Whether ``waiting`` waits for ``task`` and nothing else: it awaits it, or
    ``asyncio.wait_for`` does for it (its ``fut``, a task of its own before Python 3.12)."""
    if waiting is task or waiting.done():
        return False
    if directly_awaits(waiting, task):
        return True
    frames = list(_suspended_frames(waiting))
    return bool(frames) and (
        frames[-1].f_code is _WAIT_FOR and frames[-1].f_locals.get("fut") is task
    )


def _runs_application(frames: Iterable[FrameType], state: object) -> bool:
    """Whether these frames run an ASGI application for the request whose scope's ``state``
    is ``state``: one of them is an application's call, its parameters ``scope, receive,
    send`` (after ``self``), given the request's scope (middlewares pass it on, or a copy
    sharing its ``state``). A task the request's code starts runs none, even when a variable
    of its own named ``scope`` holds the request's scope."""
    for frame in frames:
        code = frame.f_code
        if code.co_varnames[max(code.co_argcount - 3, 0) : code.co_argcount] == _ASGI_CALL:
            scope = frame.f_locals.get("scope")
            if isinstance(scope, Mapping) and scope.get("state") is state:
                return True
    return False


_ASGI_CALL = ("scope", "receive", "send")
_WAIT_FOR = asyncio.wait_for.__code__


def serving(db: Database | AsyncDatabase, scope: MutableMapping[str, Any]) -> bool:
    """Whether this request runs under a DatabaseMiddleware of ``db`` already (a mounted
    sub-application with a middleware of its own): its transaction is the request's."""
    holder = SERVING.get()
    return holder is not None and holder.db is db and holder.state is scope.get("state")
