"""The audit's guard: a write to an audited table that the audit does not record is refused
(UnauditedWriteError) before it is sent, so no path writes one silently.

The audit records the unit of work's flushes (`.capture`), the statements run through a
session (`.statements`) and the repositories' bulk writes (`.bulk`). What reaches the database
another way would be written unrecorded: a Core statement or raw SQL on a connection
(``engine.begin()``, ``session.connection().execute()``, ``exec_driver_sql()``) and the
Session's legacy bulk methods (``bulk_insert_mappings``, ``bulk_save_objects``,
``bulk_update_mappings``), which run neither flush nor statement events. A statement hook sees
them all: it runs before every statement of every engine a Database builds (ORM, Core, text,
executemany; dalkit.engine.statement_hooks), and allows a write to an audited table (or a
DELETE or UPDATE of a table whose foreign keys' actions reach one, `.cascades`) only when

- it runs inside `recorded()`: the audit's own capture of a session statement, and a bulk
  write whose chunks a recorder records (the repositories', ``recording_bulk_insert``);
- or it is sent by a flush the audit's events saw begin (`flush_began`), on one of that
  flush's connections: they record its changes. ``Session._flushing`` alone would not do: the
  legacy bulk methods set it too, without any flush event;
- or it runs inside `unaudited()`, for a write that is not to be recorded (a data fix).

Installed with the audit's session listeners, when the first model is audited: until then no
engine runs it. Engines built outside dalkit (a plain ``create_engine``, the one dalkit's
migrations give Alembic) are not guarded.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import UOWTransaction
from sqlalchemy.sql.expression import TextClause

from dalkit.audit.cascades import has_audited_dependents
from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.raw import audited_target, describe
from dalkit.audit.registry import table_audit

__all__ = ["flush_began", "guard", "recorded", "unaudited"]

# set by unaudited() and recorded(): the block's writes to audited tables are allowed
_allowed: ContextVar[bool] = ContextVar("dalkit_audit_allowed", default=False)
# the flushes the audit saw begin in this thread or task (weakly: a flush context is dropped
# when its flush is over)
_flushes: ContextVar[tuple[weakref.ref[UOWTransaction], ...]] = ContextVar(
    "dalkit_audit_flushes", default=()
)
_HOW = (
    "write it through a session (session.execute records it), the ORM or a repository; a "
    "write that is not to be recorded goes inside dalkit.audit.unaudited()"
)


@contextlib.contextmanager
def unaudited() -> Iterator[None]:
    """Let the writes to audited tables made inside the block go unrecorded.

    Without it such a write through a path the audit cannot record (a Core statement on a
    connection, raw SQL, the Session's legacy bulk methods) raises UnauditedWriteError. The
    writes the audit does record (the ORM, a session's statements, repositories) are still
    recorded inside it. It holds for the current thread or asyncio task.

    Yields:
        None: inside the block, such writes go through unrecorded.

    Examples:
        ``with unaudited(): connection.execute(update(accounts).values(region="eu"))``
    """
    token = _allowed.set(True)
    try:
        yield
    finally:
        _allowed.reset(token)


#: The block's writes are recorded by the caller (the audit's capture, a bulk recorder), so
#: the guard allows them as `unaudited()` does; the name says why, for dalkit's own code.
recorded = unaudited


def guard(cursor: Any, statement: str, context: Any) -> None:
    """The statement hook: raise UnauditedWriteError for an unrecorded write to an audited
    table, before it is sent; return for everything else."""
    if context.isddl:
        return
    compiled = context.compiled
    target: Any
    if context.isinsert or context.isupdate or context.isdelete:
        target = getattr(compiled.statement, "table", None)
        if table_audit(target) is None and not (
            (context.isdelete or context.isupdate)
            and has_audited_dependents(target, updating=context.isupdate)
        ):
            return
        raw = False
    elif compiled is None or isinstance(compiled.statement, TextClause):
        target = audited_target(statement, context.root_connection.engine)
        if target is None:
            return
        raw = True
    else:
        return  # a compiled SELECT
    # the allowed cases after the refusable writes are known: the message is built last
    if _allowed.get():
        return
    if _in_recorded_flush(context.root_connection):
        return
    what = "raw SQL writing" if raw else f"this {_kind(context)} of"
    raise UnauditedWriteError(
        f"{what} {describe(target)}, would not be recorded in the audit log: {_HOW}"
    )


def flush_began(flush_context: UOWTransaction) -> None:
    """Note a flush whose changes the audit records (its before_flush): statements on its
    connections pass the guard while it runs.

    Kept in a context variable rather than a Session event pair: a flush that fails ends
    with no event, and a mark left behind must not let a later write through. A flush is
    recognised as running by its own subtransaction being the session's current one, which
    no later write of the session (a legacy bulk method makes a subtransaction of its own)
    can be; finished flushes are dropped at the next one.
    """
    running = _flushes.get()
    if running:  # drop the flushes that are over (a failed one ends with no event)
        running = tuple(ref for ref in running if _not_over(ref()))
    _flushes.set((*running, weakref.ref(flush_context)))


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


def _in_recorded_flush(connection: Any) -> bool:
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


def _kind(context: Any) -> str:
    if context.isinsert:
        return "INSERT"
    return "UPDATE" if context.isupdate else "DELETE"
