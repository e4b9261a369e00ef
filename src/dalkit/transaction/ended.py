"""A session whose transaction has ended refuses to begin another: used afterwards (a session
kept past its with-block, an ``on_commit`` callback, a streaming response body), it would begin
a transaction that nobody commits, on a connection nobody gives back. And the block or
function that owns a transaction refuses ``session.commit()`` inside it: the commit would make
what came before permanent whatever happens after (a later error, a retry that writes it again);
after a ``session.rollback()`` inside it, it cannot go on, and ends rolled back (as it does
for a `RollbackRequested` thrown in).
Also the commit that ends a runner's write transaction and the close after it, in one greenlet
on the async side, and the close of a session that holds no transaction, in none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm.session import _SessionCloseState
from sqlalchemy.util import greenlet_spawn

if TYPE_CHECKING:  # not at run time: the sync API runs without greenlet, which it needs
    from sqlalchemy.ext.asyncio import AsyncSession

from dalkit.engine.session import add_commit_check, add_rollback_hook
from dalkit.errors import TransactionAbortedError, TransactionError
from dalkit.transaction.scope import TransactionScope, current_scope

__all__ = [
    "RollbackRequested",
    "close_session",
    "close_session_async",
    "commit_and_close",
    "commit_and_close_async",
    "install",
    "rolled_back_inside",
    "refuse_further_use",
]

_ENDED = "dalkit.transaction_ended"
_CLOSE_IS_RESET = _SessionCloseState.CLOSE_IS_RESET


class RollbackRequested(Exception):
    """Thrown into a transaction's block to roll it back on purpose (a unit of work's
    ``rollback()``): the block raises nothing, and the statistics count it as discarded, as
    they do a ``session.rollback()`` inside it, not as failed."""


def _ended() -> TransactionError:
    return TransactionError(
        "this session's transaction has ended: it cannot begin another; open a new "
        "transaction (db.transaction(), db.run_transaction()) for later work"
    )


def refuse_further_use(session: Any, refusal: Callable[[], Exception] = _ended) -> None:
    """Make ``session`` (a Session or an AsyncSession) raise ``refusal()`` on every statement,
    flush, ``add()`` and ``connection()`` from now on: each first begins a transaction.

    Args:
        session: The session whose transaction has ended.
        refusal: Builds the error to raise (the last one given wins).
    """
    getattr(session, "sync_session", session).info[_ENDED] = refusal


def _refuse(session: Session, transaction: Any) -> None:
    refusal = session.info.get(_ENDED)
    if refusal is not None:
        # the transaction exists by now, without a connection: closed, so that the next use
        # tries to begin one again (and is refused again) instead of running in it
        session.close()
        raise refusal()


def _running_owner(session: Session) -> TransactionScope | None:
    """The dalkit transaction that owns ``session``, if it runs in this context and has not
    ended (its runner marks it finished once the block or function has ended)."""
    scope = current_scope()
    for running in scope.ancestors() if scope is not None else ():
        owned = getattr(running.session, "sync_session", running.session)
        if owned is session and not running.finished:
            return running
    return None


def _refuse_commit_inside(session: Session) -> None:
    """Refuse ``session.commit()`` while the dalkit transaction that owns ``session`` runs."""
    if _running_owner(session) is not None:
        raise TransactionError(
            "session.commit() inside the block or function that owns the transaction "
            "(db.transaction(), db.session(), a unit of work, a transactional function): it "
            "commits when it ends, and a commit here would make what came before permanent "
            "even if what follows fails (or a retry writes it again); nothing was committed. "
            "Remove the commit() call; for work that must commit on its own, give it "
            'db.transaction(propagation="requires_new")'
        )


def _mark_rolled_back_inside(session: Session) -> None:
    """After ``session.rollback()`` while the dalkit transaction that owns ``session`` runs:
    the whole transaction is undone, its commit callbacks with it, so the block or function may
    not carry on in a new transaction that its end would commit; its end gives the connection
    back, nothing to commit, and runs the rollback callbacks."""
    scope = _running_owner(session)
    if scope is not None:
        scope.rolled_back_inside()
        refuse_further_use(session, _rolled_back_inside)


def _rolled_back_inside() -> TransactionAbortedError:
    return TransactionAbortedError(
        "session.rollback() inside the block or function that owns the transaction rolled "
        "the whole transaction back: nothing more can run in it. To undo all of it, raise out "
        "of the block or end it there; to undo part, use a savepoint (propagation='nested')"
    )


def rolled_back_inside(session: Any) -> bool:
    """Whether ``session`` (a Session or an AsyncSession) was rolled back inside the block or
    function that owns its transaction, which then ends with nothing to commit.

    Args:
        session: The session.

    Returns:
        True after such a ``session.rollback()``.
    """
    return getattr(session, "sync_session", session).info.get(_ENDED) is _rolled_back_inside


def install() -> None:
    """One listener for every session, which checks a flag: listening on each session instead
    costs more than a request's own statements; and the commit check of `DalkitSession`.
    Installed once, however often called."""
    if not event.contains(Session, "after_transaction_create", _refuse):
        event.listen(Session, "after_transaction_create", _refuse)
    add_commit_check(_refuse_commit_inside)
    add_rollback_hook(_mark_rolled_back_inside)


def commit_and_close(session: Session) -> BaseException | None:
    """``session.commit()``, then ``session.close()``, which gives the connection back.

    Args:
        session: The session to commit.

    Returns:
        What the close raised, if anything, for the caller to raise once it has refused the
        session further use; what the commit raises is raised.
    """
    session.commit()
    try:
        session.close()
    except BaseException as error:  # the caller raises it
        return error
    return None


# AsyncSession classes -> whether their commit and close are AsyncSession's own
_PLAIN_CLASSES: dict[type[Any], bool] = {}


async def commit_and_close_async(session: AsyncSession) -> BaseException | None:
    """`commit_and_close` for an AsyncSession: one greenlet for both, where ``await
    session.commit()`` and ``await session.close()`` take one each (greenlet_spawn, ~10 us
    each on the loaded shared machine, timeit), of an async write request's ~730 us of CPU.

    Args:
        session: The session to commit.

    Returns:
        What the close raised, if anything; what the commit raises is raised.
    """
    cls = type(session)
    plain = _PLAIN_CLASSES.get(cls)
    if plain is None:
        from sqlalchemy.ext.asyncio import AsyncSession

        plain = cls.commit is AsyncSession.commit and cls.close is AsyncSession.close
        _PLAIN_CLASSES[cls] = plain
    if plain:
        found: BaseException | None = await greenlet_spawn(commit_and_close, session.sync_session)
        return found
    await session.commit()  # an AsyncSession class of its own: its own methods
    try:
        await session.close()
    except BaseException as error:  # the caller raises it
        return error
    return None


def close_session(session: Session) -> None:
    """``session.close()``: the sync side of `close_session_async`; skipped when it would
    change nothing (`_holds_nothing`).

    Args:
        session: The session to close.
    """
    if not _holds_nothing(session):
        session.close()


def _holds_nothing(sync: Session) -> bool:
    """Whether ``sync.close()`` would change nothing: no transaction, no entity, a close that
    only resets (SQLAlchemy's default ``close_resets_only``), by SQLAlchemy's own methods. Its
    close then swaps the empty identity map and lists for new empty ones, and detaches no one:
    5.9 us of CPU of an empty ``db.transaction()``'s 24.9, sync (/work/prof26/scope6/micro2.py,
    medians of 9) -- a request's transaction that reads nothing, or only a cache's Core rows
    or memoised values, which put no entity in the session."""
    return (
        sync._transaction is None
        and not sync.identity_map
        and not sync._new
        and not sync._deleted
        and sync._close_state is _CLOSE_IS_RESET
        and _plain_close(None, type(sync))
    )


# the Session events that closing a session with no transaction runs (expunge_all's detaching
# of its entities): a listener may need the greenlet that AsyncSession.close runs it in
_DETACHING = ("persistent_to_detached", "deleted_to_detached", "pending_to_transient")


async def close_session_async(session: AsyncSession) -> None:
    """``await session.close()``, without its greenlet when the session holds no transaction
    (a read-only transaction whose reads each ran on a pooled connection of their own, see
    `dalkit.query.plain_entities`): its close then only detaches the session's entities, which
    sends nothing and awaits nothing; not at all when it would change nothing (`_holds_nothing`).

    Args:
        session: The session to close.
    """
    sync = session.sync_session
    if _holds_nothing(sync) and _plain_close(type(session), None):
        return
    if sync._transaction is None and _plain_close(type(session), type(sync)):
        events = sync.dispatch
        if not any(getattr(events, name) for name in _DETACHING):
            # the greenlet of ``await session.close()`` costs 14 us of CPU here: 30.7 -> 16.3
            # us a close of a session holding one entity (/work/prof23/lean2/closemicro.py,
            # interleaved batches, median of 15); bench/peers' async get by id, 32 tasks over
            # a pool of 8: 345 -> 315, 330 -> 307, 277 -> 270 us of CPU per request
            # (/work/prof23/lean2/ab.py 21, three interleaved runs, greenlet close / this)
            sync.close()
            return
    await session.close()


# (AsyncSession class, Session class) -> whether their close is SQLAlchemy's own (None: not
# asked, either side)
_PLAIN_CLOSE: dict[tuple[type[Any] | None, type[Any] | None], bool] = {}


def _plain_close(cls: type[Any] | None, sync_cls: type[Any] | None) -> bool:
    plain = _PLAIN_CLOSE.get((cls, sync_cls))
    if plain is None:
        from sqlalchemy.ext.asyncio import AsyncSession

        plain = (cls is None or cls.close is AsyncSession.close) and all(
            sync_cls is None or getattr(sync_cls, name) is getattr(Session, name)
            for name in ("close", "_close_impl", "expunge_all")
        )
        _PLAIN_CLOSE[(cls, sync_cls)] = plain
    return plain
