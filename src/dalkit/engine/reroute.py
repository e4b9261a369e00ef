"""Which failed transactions may run again at once on another node: the runner's
``on_failure`` hook, and which errors mean a lost or refused connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy.exc

from dalkit.errors import ConnectionFailedError, ConnectionLostError
from dalkit.transaction.options import TransactionOptions

__all__ = ["failure_hook", "lost_connection"]


class Rerouter(Protocol):
    """The router as the failure hook sees it."""

    def reroute(self, session: Any, error: BaseException, read_only: bool) -> bool:
        """Whether the failed attempt may run again at once elsewhere."""
        ...


def lost_connection(error: BaseException) -> bool:
    """Whether ``error`` means the connection was lost or refused (not a query's own error).

    Args:
        error: What a transaction raised.

    Returns:
        True for a lost, refused or invalidated connection, or an error raised from one.
    """
    if isinstance(error, ConnectionLostError | ConnectionFailedError | OSError):
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        return bool(error.connection_invalidated)
    cause = error.__cause__
    return cause is not None and cause is not error and lost_connection(cause)


def failure_hook(
    router: Rerouter | None, multi_host: bool
) -> Callable[[TransactionOptions, Any, Exception], str] | None:
    """The runner's ``on_failure``.

    Args:
        router: The database's replica router, or None without replicas.
        multi_host: Whether the database URL names several hosts (libpq failover).

    Returns:
        None when there is nothing to decide, else a function of a failed attempt that
        returns ``"rerun"`` (run it again at once elsewhere: its replica failed before it wrote
        anything, and the replica is ejected), ``"retry"`` (a refused connection under a
        multi-host URL: the next attempt may reach the promoted primary, and nothing ran) or
        ``""`` (the retry policy decides).
    """
    if router is None and not multi_host:
        return None

    def on_failure(options: TransactionOptions, session: Any, error: Exception) -> str:
        if router is not None and router.reroute(session, error, options.read_only):
            return "rerun"
        if multi_host and isinstance(error, ConnectionFailedError):
            return "retry"
        return ""

    return on_failure
