"""Which Session a Connection serves, for the statement hooks that must know (the cache's
capture of what a transaction wrote).

SQLAlchemy keeps no link from a Connection to the Session using it, and a statement hook is
given the Connection only. A Session's ``after_begin`` event fires as each Connection joins its
transaction, so a listener there tags the Connection with a weak reference to the Session: a
Connection serves one Session transaction and is discarded with it, so nothing needs clearing.
The listener is installed only when a feature asks (`track_owners`), so sessions of an
application using neither feature dispatch no event for it.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["owner_of", "track_owners"]

_OWNER = "_dalkit_session"  # Connection attribute: weakref to the Session using it


def track_owners() -> None:
    """Tag every Connection a Session begins on with that Session; idempotent."""
    if not event.contains(Session, "after_begin", _tag):
        event.listen(Session, "after_begin", _tag)


def owner_of(connection: Any) -> Session | None:
    """The Session whose transaction ``connection`` serves, or None (a Connection used on its
    own, or a Session begun before `track_owners`).

    Args:
        connection: A (sync) Connection.
    """
    owner: weakref.ref[Session] | None = getattr(connection, _OWNER, None)
    return owner() if owner is not None else None


def _tag(session: Session, transaction: Any, connection: Any) -> None:
    setattr(connection, _OWNER, weakref.ref(session))
