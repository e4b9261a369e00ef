"""Why a read must go to the database instead of the cache (`bypass_reason`), and whether
its result may be stored (`may_store`), for `dalkit.cache.core.CacheCore`.

A cached result is the newest committed data. A read that must see something else is bypassed:
a row lock, a transaction's own uncommitted changes, a snapshot older than the
entry (REPEATABLE READ or SERIALIZABLE, however it was asked for: ``db.transaction(isolation=...)``,
the server's, role's or connection's default, or a ``SET TRANSACTION`` sent as SQL), a value
with no stable text to key it by. A result read with unflushed changes in the session (autoflush
off) is not stored: its entities carry them. No I/O: the facts come from the session, the
transaction scope and the dialect.
"""

from __future__ import annotations

import re
from collections.abc import Sized
from typing import Any, Protocol

from sqlalchemy.orm import Session

from dalkit.cache.catalog import CatalogMap
from dalkit.cache.keys import UNKEYABLE, tenant_part
from dalkit.transaction.scope import current_scope

__all__ = ["SNAPSHOT", "WRITTEN", "bypass_reason", "live_session", "may_store", "sets_snapshot"]

#: session.info key of the tables a session's open transaction has written
WRITTEN = "dalkit.cache.written"
#: session.info key: its open transaction asked for a snapshot level in SQL (`sets_snapshot`)
SNAPSHOT = "dalkit.cache.snapshot"
_SNAPSHOT_LEVELS = frozenset({"REPEATABLE READ", "SERIALIZABLE"})
# SET TRANSACTION ISOLATION LEVEL ..., SET SESSION CHARACTERISTICS AS TRANSACTION ..., SET
# [SESSION|LOCAL] [default_]transaction_isolation ..., BEGIN/START TRANSACTION ISOLATION ...
_SETS_ISOLATION = re.compile(
    r"^\s*(?:set\b[^;]*\b(?:transaction|characteristics|transaction_isolation)\b|"
    r"(?:begin|start\s+transaction)\b[^;]*\bisolation\b)[^;]*\b(?:repeatable|serializable)\b",
    re.I,
)


class CacheState(Protocol):
    """What the decision reads of `dalkit.cache.core.CacheCore` (which imports this module)."""

    _snapshot_per_transaction: bool
    catalog: CatalogMap
    serve_row_security: bool
    serve_snapshot_reads: bool
    server_isolation: Any

    @property
    def pending(self) -> Sized:
        """The invalidations that have not reached the backend yet."""


def sets_snapshot(sql: str) -> bool:
    """Whether ``sql`` asks for REPEATABLE READ or SERIALIZABLE itself.

    Args:
        sql: A statement's text.

    Returns:
        True for ``SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`` and its kin.
    """
    return _SETS_ISOLATION.match(sql) is not None


def live_session() -> Session | None:
    """The ORM session of the live dalkit transaction, if any.

    Returns:
        The Session (an AsyncSession's own), or None outside a transaction.
    """
    return _session_of(_live())


def _live() -> Any:
    scope = current_scope()
    return None if scope is None else scope.live()


def _session_of(live: Any) -> Session | None:
    return None if live is None else getattr(live.session, "sync_session", live.session)


def bypass_reason(
    cache: CacheState, session: Session | None, tables: tuple[str, ...], statement: Any, key: str
) -> str | None:
    """See `CacheCore.bypass_reason`."""
    if cache.pending:
        return "pending invalidation"
    if key.startswith(UNKEYABLE):
        return "unkeyable value"  # a value whose only text is its memory address
    if tenant_part(tables) is None:
        return "no tenant"  # the database's tenant scoping decides
    if getattr(statement, "_for_update_arg", None) is not None:
        return "row locks"  # SELECT ... FOR UPDATE must reach the rows it locks
    if reason := cache.catalog.bypass(tables, serve_row_security=cache.serve_row_security):
        return reason
    live = _live()
    reader = session if session is not None else _session_of(live)
    if not cache.serve_snapshot_reads:
        isolation = "" if live is None else (live.options.isolation or "")
        if not isolation and cache.server_isolation is not None:
            # the level the server, the role or the connection's options give by default
            isolation = getattr(cache.server_isolation, "default_isolation_level", None) or ""
        if isolation.upper() in _SNAPSHOT_LEVELS or (reader and reader.info.get(SNAPSHOT)):
            return "snapshot isolation"
    written = None if reader is None else reader.info.get(WRITTEN)
    if written and cache.catalog.overlaps(written, tables):
        return "own write"
    return None


def may_store(cache: CacheState, session: Session | None) -> bool:
    """See `CacheCore.may_store`."""
    if session is None:
        return True
    if cache._snapshot_per_transaction and session.in_transaction():
        return False
    # unflushed changes (autoflush off): the result's entities carry them, and a stored
    # entry would hand them to other transactions before, or without, their commit
    return session._is_clean()
