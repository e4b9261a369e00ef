"""A session whose transaction has ended refuses to begin another: used afterwards (a session
kept past its with-block, an ``on_commit`` callback, a streaming response body), it would begin
a transaction that nobody commits, on a connection nobody gives back. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from dalkit.errors import TransactionError

__all__ = ["install", "refuse_further_use"]

_ENDED = "dalkit.transaction_ended"


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


def install() -> None:
    """One listener for every session, which checks a flag: listening on each session instead
    costs more than a request's own statements. Installed once, however often called."""
    if not event.contains(Session, "after_transaction_create", _refuse):
        event.listen(Session, "after_transaction_create", _refuse)
