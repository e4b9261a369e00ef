"""The Redis backends' pause after a timeout (a circuit breaker): a Redis that stopped
answering (hung, paused, its host unreachable) is not asked again for a while, so each cached
read and each commit does not wait a socket timeout for it.

While paused, a command fails at once with the error that paused it: the cache counts a read
as a bypass and an error, and keeps a commit's invalidation pending (`dalkit.cache.pending`:
every read bypasses the cache until it is applied, so no stale entry is served once Redis
answers again). When the pause is over, the next command tries Redis (the others still fail
at once meanwhile): an answer ends the pause, another timeout starts a longer one (the
project's one backoff, `backoff_delay`). A refused connection fails at once anyway, and
pauses nothing.
"""

from __future__ import annotations

import random
import threading
from time import monotonic

from dalkit.cache.errors import CacheConfigurationError
from dalkit.transaction.retry import backoff_delay

__all__ = ["TimeoutPause"]

_JITTER = 0.25  # processes that saw the same hang do not all try again at once


class TimeoutPause:
    """When a backend may talk to Redis again after a command timed out. Thread-safe.

    Args:
        first: Seconds of the pause after a first timeout (0: never pause).
        longest: Seconds a pause lasts at most; it doubles for each timeout in a row.

    Raises:
        CacheConfigurationError: ``first`` is negative, or ``longest`` below it.
    """

    __slots__ = ("_error", "_lock", "_timeouts", "_until", "first", "longest")

    def __init__(self, first: float, longest: float) -> None:
        if first < 0 or longest < first:
            raise CacheConfigurationError(
                f"need 0 <= timeout_pause ({first}) <= timeout_pause_max ({longest})"
            )
        self.first = float(first)
        self.longest = float(longest)
        self._timeouts = 0  # in a row, the last one's pause running or over
        self._until = 0.0
        self._error: Exception | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise the error that started the pause while it lasts; when it is over, let this
        caller (alone) try Redis again.

        Raises:
            Exception: While the pause lasts, one of the class of the timeout that started it.
        """
        if not self._timeouts:  # the usual case: no lock taken
            return
        with self._lock:
            error = self._error
            if not self._timeouts or error is None:
                return
            now = monotonic()
            if now >= self._until:  # over: this caller tries; the others wait for its answer
                self._until = now + self._delay()
                return
            left = self._until - now
        # a new one: raising the same object again would grow its traceback with every call
        raise type(error)(f"{error} (Redis is not asked again for {left:.1f} s)")

    def timed_out(self, error: Exception) -> None:
        """A command timed out: pause (longer than the last time, if that one timed out too).

        Args:
            error: The timeout (redis-py's), whose class `check` raises while the pause lasts.
        """
        if self.first <= 0:
            return
        with self._lock:
            self._timeouts += 1
            self._error = error
            self._until = monotonic() + self._delay()

    def answered(self) -> None:
        """Redis answered a command: no pause."""
        if self._timeouts:
            with self._lock:
                self._timeouts = 0
                self._error = None

    def _delay(self) -> float:
        return backoff_delay(self._timeouts, self.first, self.longest, _JITTER, random.random())
