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
- or it is sent by a flush the audit's events saw begin, on one of that flush's connections
  (`dalkit.query.running_flush`): they record its changes;
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

from sqlalchemy.sql.expression import Insert, TextClause, Update, UpdateBase

from dalkit.audit.cascades import has_audited_dependents
from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.raw import audited_target, describe
from dalkit.audit.registry import table_audit
from dalkit.query.dml_ctes import cte_writes
from dalkit.query.running_flush import in_running_flush

__all__ = ["guard", "recorded", "unaudited", "unrecorded_allowed"]

# set by unaudited() and recorded(): the block's writes to audited tables are allowed
_allowed: ContextVar[bool] = ContextVar("dalkit_audit_allowed", default=False)
_UNRECORDED = "a write that is not to be recorded goes inside dalkit.audit.unaudited()"
_HOW = (
    f"write it through a session (session.execute records it), the ORM or a repository; "
    f"{_UNRECORDED}"
)
# a session's statements are recorded, but not the writes in a WITH clause of one
_HOW_CTE = (
    f"send it as a statement of its own, through a session, the ORM or a repository; {_UNRECORDED}"
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


def unrecorded_allowed() -> bool:
    """Whether the current thread or task is inside `unaudited()` (or `recorded()`).

    Returns:
        True when its writes to audited tables may go unrecorded.
    """
    return _allowed.get()


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
    cte: UpdateBase | None = None  # the write in a WITH clause that reaches an audited table
    if context.isinsert or context.isupdate or context.isdelete:
        target = getattr(compiled.statement, "table", None)
        if not _reaches_audit(target, insert=context.isinsert, updating=context.isupdate):
            cte = _audited_cte(compiled)
            if cte is None:
                return
        raw = False
    elif compiled is None or isinstance(compiled.statement, TextClause):
        target = audited_target(statement, context.root_connection.engine)
        if target is None:
            return
        raw = True
    else:  # a compiled SELECT: only an INSERT/UPDATE/DELETE in its WITH clause writes
        cte = _audited_cte(compiled)
        if cte is None:
            return
        raw = False
    # the allowed cases after the refusable writes are known: the message is built last
    if _allowed.get():
        return
    if in_running_flush(context.root_connection):
        return
    if cte is not None:
        target, how = cte.table, _HOW_CTE
        what = f"this {type(cte).__name__.upper()} (in a WITH clause) of"
    else:
        how = _HOW
        what = "raw SQL writing" if raw else f"this {_kind(context)} of"
    raise UnauditedWriteError(
        f"{what} {describe(target)}, would not be recorded in the audit log: {how}"
    )


def _reaches_audit(table: Any, *, insert: bool, updating: bool) -> bool:
    """Whether a write to ``table`` writes an audited table, itself or by its foreign keys."""
    if table_audit(table) is not None:
        return True
    return not insert and has_audited_dependents(table, updating=updating)


def _audited_cte(compiled: Any) -> UpdateBase | None:
    """The INSERT/UPDATE/DELETE in the statement's WITH clause that writes an audited table;
    None when none does (the usual case: one attribute look-up)."""
    for write in cte_writes(compiled):
        updating = isinstance(write, Update)
        if _reaches_audit(write.table, insert=isinstance(write, Insert), updating=updating):
            return write
    return None


def _kind(context: Any) -> str:
    if context.isinsert:
        return "INSERT"
    return "UPDATE" if context.isupdate else "DELETE"
