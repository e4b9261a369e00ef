"""A request's session while its transaction ends: a task the request's code started and did
not await (``asyncio.create_task``), or a thread (``asyncio.to_thread``) for a sync Database,
may still be using it. A task's operation in flight is waited for, so that COMMIT never runs
beside it (a thread's statement holds its connection's lock, which COMMIT waits for); their
later operations are refused with ``ResponseStartedError``, so that their work is never half
joined or lost without a word. No I/O of its own."""

from __future__ import annotations

import asyncio
import importlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from dalkit.integrations.errors import ResponseStartedError

__all__ = ["install", "settle", "settle_sync", "watch"]

_BUSY = "dalkit.web.busy"  # the greenlets that ran an operation of the request's session
_ENDING = "dalkit.web.ending"  # the task ending the request's transaction, once it ends it
_LONGEST_WAIT_S = 0.01  # between two looks at an operation still in flight
# greenlet.getcurrent, once a request has an AsyncSession: greenlet comes with the async
# extras, and a sync install imports this module without it
_current_greenlet: Callable[[], Any] = threading.get_ident


def watch(session: Session | AsyncSession) -> None:
    """Note each operation of ``session``, the session of a request's transaction, from now on.

    Args:
        session: The request's session.
    """
    global _current_greenlet
    if isinstance(session, AsyncSession):
        _current_greenlet = importlib.import_module("greenlet").getcurrent
        session.sync_session.info[_BUSY] = weakref.WeakSet()
    else:
        session.info[_BUSY] = None  # threads: nothing to note


def settle_sync(session: Session) -> None:
    """In the thread about to end a sync request's transaction: refuse other threads'
    operations from now on.

    Args:
        session: The request's Session.
    """
    session.info[_ENDING] = threading.get_ident()


async def settle(session: AsyncSession) -> None:
    """In the task about to end the request's transaction: refuse other tasks' operations from
    now on, and wait for those in flight (a statement, a flush) to finish.

    Args:
        session: The request's AsyncSession.
    """
    info = session.sync_session.info
    info[_ENDING] = asyncio.current_task()
    busy: weakref.WeakSet[Any] | None = info.get(_BUSY)
    wait = 0.0005
    # an AsyncSession operation runs in a greenlet of its own, alive until it returns; this
    # task runs none now, so a live one is another task's, suspended in I/O
    while busy is not None and any(not running.dead and running.parent for running in busy):
        await asyncio.sleep(wait)
        wait = min(wait * 2, _LONGEST_WAIT_S)


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
    if operation and busy is not None:
        busy.add(_current_greenlet())


def _refusal() -> ResponseStartedError:
    return ResponseStartedError(
        "the request's transaction ended when its response started: a task or thread the "
        "request started and did not await cannot use its session any more. Work that "
        "outlives the request needs a transaction of its own: "
        "db.transaction(propagation='requires_new') (or db.transaction() once the request "
        "is over)"
    )


def _on_execute(state: ORMExecuteState) -> None:
    _check(state.session)


def _on_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _check(session)


def _on_attach(session: Session, instance: Any) -> None:
    _check(session, operation=False)  # no I/O: in the task's own greenlet


def install() -> None:
    """The listeners, on every Session, ahead of the others (installed once).

    A refused flush must do nothing first: the audit reads rows before a flush, and a flush
    that failed would roll the request's transaction back.
    """
    for name, listener in (
        ("do_orm_execute", _on_execute),
        ("before_flush", _on_flush),
        ("before_attach", _on_attach),
    ):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener, insert=True)
