"""Which entities of a session hold domain events (`holders`), and a commit that would lose
them refuses: only a unit of work dispatches the events
its entities record, or writes them to the outbox, and it takes them from its session before it
commits. A session committed any other way (``db.transaction()``, ``db.session()`` and
``commit()``, a bare Session) with an entity still holding events raises
`UncollectedEventsError` before COMMIT, so the transaction rolls back instead of dropping them
silently. Installed with the first `HasEvents` model, as a ``before_commit`` listener on the
``Session`` class that a read-only transaction's short commit runs too
(`dalkit.transaction.deferred.checks_commit`).

Events recorded inside a savepoint that rolls back are dropped with it, as its changes are:
those of the session's entities, and those its units of work published (their lists, `track`-ed
on the session); a get-or-create whose INSERT lost in its savepoint announces nothing. Events
are numbered in the one global order they were recorded in (`next_sequence`), and each savepoint
remembers the number it began at.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, object_session

from dalkit.errors import UnitOfWorkError
from dalkit.transaction.deferred import checks_commit

__all__ = [
    "UncollectedEventsError",
    "hold",
    "holders",
    "install",
    "next_sequence",
    "track",
    "untrack",
]

# where HasEvents keeps an entity's recorded events (outbox.events)
_EVENTS = "_dalkit_events"
# session.info: the entities of the session holding events, by id. The identity map holds a
# clean entity weakly, and one deleted and flushed not at all: either could take its events
# with it (garbage collected, or out of every collection a unit of work looks in)
_HOLDERS = "dalkit.event_holders"
# session.info: the lists of events its open units of work published (`track`)
_PUBLISHED = "dalkit.published_events"

#: the sequence number of the next event recorded: one global order of recording, so that events
#: of several entities dispatch as they happened, and a savepoint knows which came after it began
next_sequence = itertools.count().__next__
# each open savepoint: the sequence number it began at
_marks: weakref.WeakKeyDictionary[SessionTransaction, int] = weakref.WeakKeyDictionary()
_installed = False


def hold(entity: Any, session: Session | None = None) -> None:
    """Keep ``entity``, which recorded an event, in its session until its events are taken.

    Args:
        entity: A `HasEvents` entity.
        session: Its session, when known (else looked up; none for a transient entity, which
            `after_attach` holds when it is added).
    """
    session = session if session is not None else object_session(entity)
    if session is not None:
        session.info.setdefault(_HOLDERS, {})[id(entity)] = entity


def holders(session: Session) -> Iterator[Any]:
    """Every entity of ``session`` that may hold events, once each: new, loaded, deleted, and
    those held since they recorded one."""
    seen: set[int] = set()
    held: dict[int, Any] = session.info.get(_HOLDERS, {})
    for entity in (*session.new, *session.identity_map.values(), *session.deleted, *held.values()):
        if id(entity) not in seen:
            seen.add(id(entity))
            yield entity
    for key in [k for k, entity in held.items() if not entity.__dict__.get(_EVENTS)]:
        del held[key]  # their events were taken


def _hold_attached(session: Session, entity: Any) -> None:
    if entity.__dict__.get(_EVENTS):  # recorded while transient
        hold(entity, session)


class UncollectedEventsError(UnitOfWorkError):
    """Raised when a session that is not a unit of work's commits entities holding domain
    events: they would never be dispatched nor reach the outbox."""


@checks_commit
def _refuse_uncollected(session: Session) -> None:
    holding = [entity for entity in holders(session) if entity.__dict__.get(_EVENTS)]
    if not holding:
        return
    count = sum(len(entity.__dict__[_EVENTS]) for entity in holding)
    kinds = ", ".join(sorted({type(entity).__name__ for entity in holding}))
    raise UncollectedEventsError(
        f"{count} domain event(s) recorded by {kinds} would be lost: only a unit of work "
        "dispatches events or stores them in the outbox, and this commit is not one; make the "
        "change inside `with UnitOfWork(db)` (or `uow.publish(...)`), and nothing was committed"
    )


def track(session: Session, published: list[Any]) -> None:
    """Drop from ``published`` what is recorded inside a savepoint of ``session`` that rolls
    back, until `untrack`.

    Args:
        session: The (sync) session of a unit of work.
        published: The unit's list of published events (``RecordedEvent``), changed in place.
    """
    session.info.setdefault(_PUBLISHED, []).append(published)


def untrack(session: Session, published: list[Any]) -> None:
    """Stop `track`-ing ``published`` (its unit of work ended).

    Args:
        session: The session given to `track`.
        published: The list given to `track`.
    """
    lists: list[list[Any]] = session.info.get(_PUBLISHED, [])
    for index, each in enumerate(lists):
        if each is published:
            del lists[index]
            return


def _savepoint_began(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        _marks[transaction] = next_sequence()


def _savepoint_rolled_back(session: Session, previous: SessionTransaction) -> None:
    # a failed flush rolls back its own subtransaction, and with it the savepoint around it
    boundary: SessionTransaction | None = previous
    while boundary is not None and not boundary.nested:
        boundary = boundary.parent
    mark = None if boundary is None else _marks.pop(boundary, None)
    if mark is None:
        return
    for entity in holders(session):
        pending = entity.__dict__.get(_EVENTS)
        if pending:
            pending[:] = [recorded for recorded in pending if recorded.sequence <= mark]
    for published in session.info.get(_PUBLISHED, ()):
        published[:] = [recorded for recorded in published if recorded.sequence <= mark]


def install() -> None:
    """Check every Session's commit for uncollected events, and drop those recorded in a
    savepoint that rolls back; idempotent, and cheap after the first call (each unit of work
    makes one)."""
    global _installed
    if _installed:
        return
    _installed = True
    if not event.contains(Session, "before_commit", _refuse_uncollected):
        event.listen(Session, "before_commit", _refuse_uncollected)
        event.listen(Session, "after_attach", _hold_attached)
        event.listen(Session, "after_transaction_create", _savepoint_began)
        event.listen(Session, "after_soft_rollback", _savepoint_rolled_back)
