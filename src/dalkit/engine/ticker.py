"""Ticker: a daemon thread that calls a function at a fixed interval until stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Ticker"]


class Ticker(threading.Thread):
    """One per database and purpose (leak warnings, the pool status log): the work it does
    would otherwise wait for a checkout or checkin that may never come.

    Args:
        name: The thread's name.
        interval: Seconds between two calls.
        fn: What to call; it runs on the ticker's thread.
    """

    def __init__(self, name: str, interval: float, fn: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = fn
        self._stopped = threading.Event()
        self._interval = interval

    def run(self) -> None:
        """Call the function every interval until `stop()`."""
        while not self._stopped.wait(self._interval):
            self._fn()

    def stop(self) -> None:
        """Stop calling the function (a call in progress finishes)."""
        self._stopped.set()
