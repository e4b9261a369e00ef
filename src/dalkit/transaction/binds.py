"""The decisions the runner makes before a transaction touches the database, shared by the sync
and async runners: the execution options of the engine a transaction runs on (a deferred BEGIN,
an isolation level, SQLite's BEGIN IMMEDIATE), and what SQLite refuses to start inside another
transaction. No I/O.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from dalkit.engine.pgbouncer import PgBouncerError
from dalkit.errors import TransactionError
from dalkit.transaction import deferred
from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.scope import TransactionScope

__all__ = ["bind_options", "check_sqlite_can_start", "pending_writes"]


def bind_options(
    engine: Engine, options: TransactionOptions, *, defer_begin: bool = True
) -> dict[str, Any]:
    """Execution options giving a connection of ``engine`` what ``options`` ask for.

    ``defer_begin`` is False where every statement must run inside a transaction block
    (asyncpg behind PgBouncer's transaction pooling), which AUTOCOMMIT would leave.

    Raises:
        PgBouncerError: AUTOCOMMIT where every statement needs a transaction block.
    """
    if options.autocommit and not defer_begin:
        # asyncpg prepares a statement and runs it in two steps, which PgBouncer sends to two
        # server connections outside a transaction block: "prepared statement does not exist"
        raise PgBouncerError(
            "isolation='AUTOCOMMIT' cannot run on asyncpg behind PgBouncer's transaction "
            "pooling: asyncpg prepares and runs each statement in two steps, which PgBouncer "
            "may send to two server connections outside a transaction block; use a "
            "transaction (the default isolation) or psycopg"
        )
    if defer_begin and deferred.deferrable(engine, options):
        return deferred.execution_options(options)
    return options.execution_options(engine.dialect.name)


def check_sqlite_can_start(
    owner: object,
    one_connection: bool,
    options: TransactionOptions,
    current: TransactionScope,
) -> None:
    """Refuse what would wait on the caller's own lock until busy_timeout, or share the one
    connection of an in-memory database with the transaction around it. A task or thread
    that inherited the transaction around it without holding it (started inside it) waits
    for the lock like any other writer, unless the holding task awaits it."""
    mine = [scope for scope in current.ancestors() if scope.owner is owner]
    if mine and one_connection:
        # a savepoint cannot stand in inside AUTOCOMMIT, where one is refused
        advice = (
            "start it after the AUTOCOMMIT transaction"
            if mine[0].options.autocommit
            else "use propagation='nested'"
        )
        raise TransactionError(
            "an in-memory SQLite database has a single connection: a transaction of its own "
            f"cannot start inside another one; {advice}"
        )
    if options.read_only or options.autocommit:
        return
    if any(not (s.options.read_only or s.options.autocommit) and _waited_by(s) for s in mine):
        raise TransactionError(
            "SQLite allows one writer at a time and the surrounding transaction holds the "
            "write lock: a requires_new writer inside it would wait for itself; use "
            "propagation='nested' or start it after the outer transaction"
        )


def _waited_by(scope: TransactionScope) -> bool:
    """Whether ``scope`` waits for the caller: the caller holds it, or it is a task the
    holding task awaits (``await asyncio.create_task(...)``)."""
    caller = scope.current_holder()
    return caller == scope.holder or directly_awaits(scope.holder, caller)


def directly_awaits(waiting: object, awaited: object) -> bool:
    """Whether the task ``waiting`` is suspended on ``awaited`` itself (``await task``).
    asyncio offers no public way to ask: this reads the future a task waits on, its private
    ``_fut_waiter``, the one place dalkit does.

    Args:
        waiting: A task (anything else waits on nothing).
        awaited: A task or future.

    Returns:
        True when ``waiting`` awaits ``awaited`` directly.
    """
    return getattr(waiting, "_fut_waiter", None) is awaited


def pending_writes(session: Any) -> bool:
    """Whether flushing ``session`` (a Session or an AsyncSession) would write anything: the
    test ``Session.flush()`` starts with. The runners skip a clean flush: awaited, it is a
    greenlet switch even when there is nothing to do, ~2% of an async get (bench/peers)."""
    # SQLAlchemy's own test; the public session.new / .deleted build a set on every call
    return not getattr(session, "sync_session", session)._is_clean()
