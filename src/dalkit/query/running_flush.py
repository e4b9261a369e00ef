"""Which ORM flush is running, and on which connections: what lets the statement guards (the
audit's, `dalkit.audit.guard`, and tenant scoping's, `.tenant_guard`) tell the statements of a
flush their session listeners checked from the same statements sent another way.

A flush is noted by its ``before_flush`` listener (`flush_began`) and recognised as running by
its own subtransaction being the session's current one, which no later write of the session can
be (a legacy bulk method, ``bulk_insert_mappings`` and the like, makes a subtransaction of its
own and sets ``Session._flushing`` too, without any flush event).
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import UOWTransaction

__all__ = ["flush_began", "in_running_flush"]

# the flushes noted in this thread or task (weakly: a flush context is dropped when its flush
# is over)
_flushes: ContextVar[tuple[weakref.ref[UOWTransaction], ...]] = ContextVar(
    "dalkit_running_flushes", default=()
)


def flush_began(flush_context: UOWTransaction) -> None:
    """Note a flush whose changes a session listener checks or records (from its
    ``before_flush``): statements on its connections pass the guards while it runs.

    Kept in a context variable rather than a Session event pair: a flush that fails ends with
    no event, and a mark left behind must not let a later statement through. Finished flushes
    are dropped at the next one; a flush noted twice (by two listeners) is kept once.
    """
    running = _flushes.get()
    if any(ref() is flush_context for ref in running):
        return
    if running:  # drop the flushes that are over (a failed one ends with no event)
        running = tuple(ref for ref in running if _not_over(ref()))
    _flushes.set((*running, weakref.ref(flush_context)))


def in_running_flush(connection: Any) -> bool:
    """Whether ``connection`` is used by a flush noted by `flush_began` that is running now.

    Args:
        connection: The Connection a statement is sent on.
    """
    for ref in _flushes.get():
        flush_context = ref()
        transaction = None if flush_context is None else _running_transaction(flush_context)
        # the session's connections are held by its outermost transactions: a subtransaction
        # (the flush's) borrows its parent's without keeping them
        while transaction is not None:
            for used, *_ in transaction._connections.values():
                if used is connection:
                    return True
            transaction = transaction._parent
    return False


def _not_over(flush_context: UOWTransaction | None) -> bool:
    if flush_context is None:
        return False
    if getattr(flush_context, "transaction", None) is None:  # set just after before_flush
        return bool(flush_context.session._flushing)
    return _running_transaction(flush_context) is not None


def _running_transaction(flush_context: UOWTransaction) -> Any:
    """The flush's own subtransaction while the flush runs, else None."""
    session = flush_context.session
    transaction = getattr(flush_context, "transaction", None)
    if transaction is None or session._transaction is not transaction or not session._flushing:
        return None
    return transaction
