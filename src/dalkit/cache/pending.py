"""Pending invalidations: the tables whose new tokens have not reached the backend yet (it
failed), kept until a bump of them succeeds; the cache is bypassed while there are any."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from time import monotonic

__all__ = ["PendingInvalidations"]


class PendingInvalidations:
    """The tables whose invalidation failed, each with the number of the failure that left it
    pending, and when they were last tried again.

    Thread-safe; true while any is pending.
    """

    def __init__(self) -> None:
        self._tables: dict[str, int] = {}
        self._failures = 0
        self._last_retry = 0.0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tables)

    def add(self, tables: Iterable[str]) -> None:
        """Keep ``tables`` pending: their invalidation failed.

        Args:
            tables: The names of the tables whose tokens were not replaced.
        """
        with self._lock:
            self._failures += 1
            self._tables.update(dict.fromkeys(tables, self._failures))

    def take(self, tables: Iterable[str] = ()) -> tuple[list[str], dict[str, int]]:
        """The tables to bump now: ``tables`` and every one pending.

        They stay pending until [`settle`][dalkit.cache.pending.PendingInvalidations.settle]:
        reads keep bypassing the cache while the bump is on its way (taken off before, a read
        in another task or thread was served an entry older than a commit long returned).

        Args:
            tables: The tables a commit wrote.

        Returns:
            The sorted names, and what to pass to ``settle`` once their bump succeeded.
        """
        if not self._tables:  # the usual case, unlocked: one added meanwhile waits its turn
            return sorted(set(tables)), {}
        with self._lock:
            taken = dict(self._tables)
        return sorted(taken.keys() | set(tables)), taken

    def settle(self, taken: dict[str, int]) -> None:
        """Drop the pending tables a bump applied: those of ``taken`` that no failure left
        pending again since.

        Args:
            taken: What ``take`` returned with the names bumped.
        """
        if not taken:
            return
        with self._lock:
            for name, failure in taken.items():
                if self._tables.get(name) == failure:
                    del self._tables[name]

    def due(self, interval: float) -> bool:
        """Whether to try the pending tables again now (at most once per ``interval``).

        Args:
            interval: Seconds between tries.

        Returns:
            True when some are pending and the last try is ``interval`` ago or more.
        """
        if not self._tables:
            return False
        now = monotonic()
        if now - self._last_retry < interval:
            return False
        self._last_retry = now
        return True
