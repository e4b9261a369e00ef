"""A request's session while its transaction ends, and its refusal of any use once it ended:
a task the request's code started and did not await (``asyncio.create_task``), or a thread
(``asyncio.to_thread``) for a sync Database, may still be using it, and a streaming body may
still read a result the request opened on a server-side cursor. A task's operation in flight
is waited for, so that COMMIT never runs beside it (a thread's statement holds its
connection's lock, which COMMIT waits for); their later operations are refused with
``ResponseStartedError``, and so is reading on from such a result, whose cursor is closed
before COMMIT: its connection goes back to the pool, and another request's transaction would
run the fetch."""

from __future__ import annotations

import asyncio
import importlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.engine.cursor import NoCursorDQLFetchStrategy
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.util import greenlet_spawn

from dalkit.integrations import _holders
from dalkit.integrations._holders import TaskHolder, in_background
from dalkit.integrations.errors import ResponseStartedError
from dalkit.query.plain_entities import PLAIN_WATCH, select_neutral
from dalkit.query.plain_inserts import flush_neutral
from dalkit.transaction import ended
from dalkit.transaction.scope import TransactionScope

__all__ = ["install", "refuse_further_use", "settle", "settle_sync", "watch"]

_BUSY = "dalkit.web.busy"  # the greenlets that ran an operation of the request's session
_ENDING = "dalkit.web.ending"  # the task ending the request's transaction, once it ends it
_STREAMED = "dalkit.web.streamed"  # the results the request read on server-side cursors
_FOREGROUND = "dalkit.web.foreground"  # the request's own session, which background tasks refuse
_LONGEST_WAIT_S = 0.01  # between two looks at an operation still in flight
# greenlet.getcurrent, once a request has an AsyncSession: greenlet comes with the async
# extras, and a sync install imports this module without it
_current_greenlet: Callable[[], Any] = threading.get_ident


def watch(session: Session | AsyncSession, *, foreground: bool = True) -> None:
    """Note each operation of ``session``, the session of a request's transaction, from now on.

    Args:
        session: The request's session.
        foreground: It is the request's own transaction (not the background tasks'), which
            refuses Starlette's background tasks even before it ends: handed its session, one
            run before the response reaches the middleware (a middleware inside holds it back)
            would write in it, rolled back with an error status.
    """
    global _current_greenlet
    if isinstance(session, AsyncSession):
        _current_greenlet = importlib.import_module("greenlet").getcurrent
        session.sync_session.info[_BUSY] = weakref.WeakSet()
    else:
        session.info[_BUSY] = None  # threads: nothing to note
    info = getattr(session, "sync_session", session).info
    info[_STREAMED] = []
    info[PLAIN_WATCH] = _check
    info[_FOREGROUND] = foreground


def settle_sync(session: Session, scope: TransactionScope | None) -> None:
    """In the thread about to end a sync request's transaction: refuse other threads'
    operations, and reading on from its server-side cursors, from now on; to them the
    transaction has ended (``scope.ending``).

    Args:
        session: The request's Session.
        scope: Its transaction.
    """
    session.info[_ENDING] = threading.get_ident()
    _end_for_others(scope, session.info[_ENDING])
    _close_streams(session)


async def settle(session: AsyncSession, scope: TransactionScope | None) -> None:
    """In the task about to end the request's transaction: refuse other tasks' operations from
    now on, and wait for those in flight (a statement, a flush) to finish; to other tasks the
    transaction has ended (``scope.ending``).

    Args:
        session: The request's AsyncSession.
        scope: Its transaction.
    """
    info = session.sync_session.info
    info[_ENDING] = asyncio.current_task()
    _end_for_others(scope, info[_ENDING])
    busy: weakref.WeakSet[Any] | None = info.get(_BUSY)
    wait = 0.0005
    # an AsyncSession operation runs in a greenlet of its own, alive until it returns; this
    # task runs none now, so a live one is another task's, suspended in I/O
    while busy is not None and any(not running.dead and running.parent for running in busy):
        await asyncio.sleep(wait)
        wait = min(wait * 2, _LONGEST_WAIT_S)
    if info.get(_STREAMED):
        await greenlet_spawn(_close_streams, session.sync_session)  # a driver's CLOSE awaits


def _end_for_others(scope: TransactionScope | None, ender: object) -> None:
    # a task or thread asking for the transaction from now on (a background task run by an
    # inner BaseHTTPMiddleware's task, its client gone before the response started) gets one
    # of its own, as after the end, rather than joining one that is flushing and committing
    if scope is not None:
        scope.ending = ender
        if isinstance(scope.holder, TaskHolder) and isinstance(ender, asyncio.Task):
            scope.holder.task = ender  # and the hooks, which run in the ending task, join it


class _Refused(NoCursorDQLFetchStrategy):
    """The fetch strategy of a result whose cursor was closed as the request's transaction
    ended: fetching raises instead of reading nothing."""

    __slots__ = ()

    def _non_result(self, result: Any, default: Any, err: BaseException | None = None) -> Any:
        raise ResponseStartedError(
            "the request's transaction ended when its response started, and with it the "
            "server-side cursor this result was reading: read it before the response starts "
            "(without yield_per or stream()), or stream from a transaction of the body's own "
            "(db.transaction() inside the generator)"
        ) from err


_REFUSED = _Refused()


def _close_streams(session: Session) -> None:
    for result in session.info.get(_STREAMED, ()):
        raw = result.raw if not isinstance(result, CursorResult) else result
        if isinstance(raw, CursorResult) and not raw.closed:
            raw._soft_close(hard=True)
            raw.cursor_strategy = _REFUSED


def _check(session: Session, *, operation: bool = True) -> None:
    info = session.info
    if _BUSY not in info:  # not a request's session
        return
    busy = info[_BUSY]
    ending = info.get(_ENDING)
    if ending is not None:
        holder = threading.get_ident() if busy is None else asyncio.current_task()
        if holder != ending:
            raise _refusal()
    elif info[_FOREGROUND] and in_background():  # a new object too: COMMIT would flush it
        raise _refusal()
    if operation and busy is not None:
        busy.add(_current_greenlet())


def _refusal() -> ResponseStartedError:
    return ResponseStartedError(
        "the request's transaction ends when its response starts: its session cannot be "
        "used any more (by a streaming body, a background task, or a task or thread the "
        "request started and did not await). Work that outlives the request needs a "
        "transaction of its own: "
        "db.transaction(propagation='requires_new') (or db.transaction() once the request "
        "is over)"
    )


@select_neutral
def _on_execute(state: ORMExecuteState) -> Result[Any] | None:
    _check(state.session)
    streamed = state.session.info.get(_STREAMED)
    if streamed is None:
        return None
    options = state.execution_options
    if not (options.get("stream_results") or options.get("yield_per")):
        return None
    # run here, and kept: its cursor must close before the connection leaves the request
    result = state.invoke_statement()
    streamed.append(result)
    return result


# neutral for dalkit's plain reads and inserts (dalkit.query.plain_entities, plain_inserts), which
# run neither: they call _check through PLAIN_WATCH instead, set on the request's session by
# watch(). Not neutral, these listeners sent every read and insert of the process the ORM's way
# once the web integration had served one request
@flush_neutral
def _on_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _check(session)


def _on_attach(session: Session, instance: Any) -> None:
    _check(session, operation=False)  # no I/O: in the task's own greenlet


def refuse_further_use(session: Session | AsyncSession) -> None:
    """Make the ended transaction's session refuse statements, flushes and new objects, so
    late work (a streaming body writing) fails loudly instead of being lost or left open.

    Args:
        session: The request's session, its transaction ended.
    """
    ended.refuse_further_use(session, _response_started)


def _response_started() -> ResponseStartedError:
    return ResponseStartedError(
        "the request's transaction ended when its response started (committed, or rolled "
        "back for an error status): this session cannot be used any more; open a new "
        "transaction with db.transaction() for later work"
    )


def install() -> None:
    """The listeners that make a request's session refuse use after its end, and by other
    tasks while it ends: on every Session, ahead of the others (installed once).

    A refused flush must do nothing first: the audit reads rows before a flush, and a flush
    that failed would roll the request's transaction back.
    """
    ended.install()
    _holders.install()
    for name, listener in (
        ("do_orm_execute", _on_execute),
        ("before_flush", _on_flush),
        ("before_attach", _on_attach),
    ):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener, insert=True)
