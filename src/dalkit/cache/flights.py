"""Single flight: one query in progress for a key, and the threads or tasks waiting for its
result instead of running the query again."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dalkit.cache.versions import Tokens

__all__ = ["Flight"]


class Flight:
    """One query in progress for a key: callers that read the same tokens wait for it
    instead of running the query again (a stampede on a cold key costs one query).

    Threads wait with [`wait`][dalkit.cache.flights.Flight.wait], tasks with
    [`wait_async`][dalkit.cache.flights.Flight.wait_async], on any thread or event loop.
    """

    __slots__ = ("_lock", "_waiters", "done", "payload", "tokens")

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.payload: Any = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wait(self) -> None:
        """Block until the flight landed."""
        self.done.wait()

    async def wait_async(self) -> None:
        """Wait, without blocking the event loop, until the flight landed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.done.is_set():
                return
            self._waiters.append((loop, future))
        await asyncio.shield(future)

    def finish(self, payload: Any) -> None:
        """Land the flight with ``payload`` (None: the waiters run their own query)."""
        self.payload = payload
        with self._lock:
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                continue


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
