"""The Session class of the sessions dalkit opens: SQLAlchemy's own, except that what ``get()``
finds in the identity map is checked before it is returned.

SQLAlchemy's ``Session.get()`` answers from the identity map without a statement, so nothing
that scopes statements (``do_orm_execute``) sees it. A feature whose reads depend on the
context registers a check here (tenant scoping does: an object loaded inside ``tenant("a")``
is no answer to ``get()`` inside ``tenant("b")`` of the same session). When a check refuses
the object, ``get()`` asks the database instead, as it does for a key it has not seen, and the
feature's statement scoping decides what that read returns. The engine knows nothing of the
features: they register their checks when they are installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

__all__ = ["DalkitSession", "IdentityCheck", "add_identity_check"]

#: True when an object found in the identity map may be returned in the current context
IdentityCheck = Callable[[object], bool]

_checks: list[IdentityCheck] = []


def add_identity_check(check: IdentityCheck) -> None:
    """Have every `DalkitSession.get()` run ``check`` on the object it finds (once per check)."""
    if check not in _checks:
        _checks.append(check)


class DalkitSession(Session):
    """A ``Session`` whose ``get()`` (and so ``get_one()`` and ``AsyncSession.get()``) runs the
    registered identity checks on the object it would return."""

    def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        """``Session.get()``; an object the identity map holds but a check refuses is read
        again from the database, ``populate_existing``, under the context's scoping."""
        found = super().get(entity, ident, **kwargs)
        if found is None or not _checks or kwargs.get("populate_existing"):
            return found
        if all(check(found) for check in _checks):
            return found
        return super().get(entity, ident, **{**kwargs, "populate_existing": True})
