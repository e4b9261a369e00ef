"""A commit that would lose domain events refuses: only a unit of work dispatches the events
its entities record, or writes them to the outbox, and it takes them from its session before it
commits. A session committed any other way (``db.transaction()``, ``db.session()`` and
``commit()``, a bare Session) with an entity still holding events raises
`UncollectedEventsError` before COMMIT, so the transaction rolls back instead of dropping them
silently. Installed with the first `HasEvents` model, as a ``before_commit`` listener on the
``Session`` class that a read-only transaction's short commit runs too
(`dalkit.transaction.deferred.checks_commit`).
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from dalkit.errors import UnitOfWorkError
from dalkit.transaction.deferred import checks_commit

__all__ = ["UncollectedEventsError", "install"]

# where HasEvents keeps an entity's recorded events (outbox.events)
_EVENTS = "_dalkit_events"


class UncollectedEventsError(UnitOfWorkError):
    """Raised when a session that is not a unit of work's commits entities holding domain
    events: they would never be dispatched nor reach the outbox."""


@checks_commit
def _refuse_uncollected(session: Session) -> None:
    holders = [
        entity
        for entity in (*session.new, *session.identity_map.values())
        if entity.__dict__.get(_EVENTS)
    ]
    if not holders:
        return
    count = sum(len(entity.__dict__[_EVENTS]) for entity in holders)
    kinds = ", ".join(sorted({type(entity).__name__ for entity in holders}))
    raise UncollectedEventsError(
        f"{count} domain event(s) recorded by {kinds} would be lost: only a unit of work "
        "dispatches events or stores them in the outbox, and this commit is not one; make the "
        "change inside `with UnitOfWork(db)` (or `uow.publish(...)`), and nothing was committed"
    )


def install() -> None:
    """Check every Session's commit for uncollected events; idempotent."""
    if not event.contains(Session, "before_commit", _refuse_uncollected):
        event.listen(Session, "before_commit", _refuse_uncollected)
