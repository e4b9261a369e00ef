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
DELETE from a table whose foreign keys reach one, `.cascades`) only when

- it runs inside `recorded()`: the audit's own capture of a session statement, and the block
  of a bulk recorder (``recording_bulk_insert``), which record what they write;
- or it carries the `RECORDED` execution option: the repositories' bulk statements, whose
  chunks are recorded and whose bisection of a bad chunk is rolled back;
- or the Session whose connection sends it is in a flush the audit's events saw begin
  (`flush_began`): they record its changes. ``Session._flushing`` alone would not do: the
  legacy bulk methods set it too, without any flush event;
- or it runs inside `unaudited()`, for a write that is not to be recorded (a data fix).

Installed with the audit's session listeners, when the first model is audited: until then no
engine runs it. Engines built outside dalkit (a plain ``create_engine``, the one dalkit's
migrations give Alembic) are not guarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TextClause

from dalkit.audit.cascades import has_audited_dependents
from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.raw import audited_target, describe
from dalkit.audit.registry import table_audit
from dalkit.engine.session_owner import owner_of

__all__ = ["RECORDED", "flush_began", "flush_ended", "guard", "recorded", "unaudited"]

#: Execution option marking a write to an audited table as recorded by the audit.
RECORDED = "dalkit_audit_recorded"
# set by unaudited() and recorded(): the block's writes to audited tables are allowed
_allowed: ContextVar[bool] = ContextVar("dalkit_audit_allowed", default=False)
_FLUSHING = "dalkit.audit.flushing"  # session.info: in a flush whose changes are recorded
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
    if context.isinsert or context.isupdate or context.isdelete:
        table: Any = getattr(compiled.statement, "table", None)
        if table_audit(table) is None and not (context.isdelete and has_audited_dependents(table)):
            return
        what = f"this {_kind(context)} of {describe(table)},"
    elif compiled is None or isinstance(compiled.statement, TextClause):
        target = audited_target(statement, context.root_connection.engine)
        if target is None:
            return
        what = f"raw SQL writing {describe(target)},"
    else:
        return  # a compiled SELECT
    if context.execution_options.get(RECORDED) or _allowed.get():
        return
    session = owner_of(context.root_connection)
    if session is not None and session._flushing and session.info.get(_FLUSHING):
        return
    raise UnauditedWriteError(f"{what} would not be recorded in the audit log: {_HOW}")


def flush_began(session: Session) -> None:
    """Note that ``session`` runs a flush whose changes the audit records (before_flush)."""
    session.info[_FLUSHING] = True


def flush_ended(session: Session, *_: Any) -> None:
    """Note that it is over (after_flush; after_transaction_end, should the flush fail)."""
    session.info.pop(_FLUSHING, None)


def _kind(context: Any) -> str:
    if context.isinsert:
        return "INSERT"
    return "UPDATE" if context.isupdate else "DELETE"
