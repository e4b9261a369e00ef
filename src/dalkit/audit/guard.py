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

- it runs inside `recorded()`: the audit's own capture of a session statement, and the block
  of a bulk recorder (``recording_bulk_insert``), which record what they write;
- or it carries the `RECORDED` execution option: the repositories' bulk statements, whose
  chunks are recorded and whose bisection of a bad chunk is rolled back;
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

__all__ = ["RECORDED", "flush_began", "guard", "recorded", "unaudited"]

#: Execution option marking a write to an audited table as recorded by the audit.
RECORDED = "dalkit_audit_recorded"
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
    with _allowing():
        yield


@contextlib.contextmanager
def recorded() -> Iterator[None]:
    """The block's writes are recorded by its caller (a bulk recorder): the guard allows
    them. Not for application code, which has `unaudited()`."""
    with _allowing():
        yield


@contextlib.contextmanager
def _allowing() -> Iterator[None]:
    token = _allowed.set(True)
    try:
        yield
    finally:
        _allowed.reset(token)


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
    if _allowed.get() or context.execution_options.get(RECORDED):
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
    if running:
        running = tuple(ref for ref in running if _still_running(ref()))
    _flushes.set((*running, weakref.ref(flush_context)))


def _still_running(flush_context: UOWTransaction | None) -> bool:
    if flush_context is None or not flush_context.session._flushing:
        return False
    transaction = getattr(flush_context, "transaction", None)  # set after before_flush
    return transaction is None or flush_context.session._transaction is transaction


def _in_recorded_flush(connection: Any) -> bool:
    transaction: Any
    for ref in _flushes.get():
        flush_context = ref()
        if flush_context is None:
            continue
        session = flush_context.session
        transaction = getattr(flush_context, "transaction", None)
        if transaction is None or session._transaction is not transaction or not session._flushing:
            continue
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
