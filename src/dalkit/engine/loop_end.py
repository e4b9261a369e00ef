"""Closing what belongs to an event loop as that loop shuts down: the one mechanism behind the
async pools' loop handling (`dalkit.engine.loops`) and the Redis clients' (`dalkit.redis.loops`).

A loop keeps the async generators that ran on it and closes them at ``shutdown_asyncgens()``
(``asyncio.run()``, ``asyncio.Runner`` and pytest-asyncio call it), while it can still close
sockets; asyncio offers no other hook at a loop's end, so a `LoopEnd` is such a generator, whose
``finally`` closes its value. Written by hand because no library does it for a value of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["LoopEnd"]

log = logging.getLogger("dalkit.pool")

T = TypeVar("T")


class LoopEnd(Generic[T]):
    """Closes ``value`` with ``close(value)`` on the running loop as that loop shuts down.
    Made inside the loop; nothing runs until then. The loop holds the generator weakly: the
    maker keeps the `LoopEnd` for as long as the value is to be closed so.

    Args:
        value: What belongs to the running loop.
        close: Closes it, awaited on that loop (an error is logged at DEBUG: the loop is
            shutting down, and there is nobody else to tell).
    """

    __slots__ = ("_close", "generator", "loop", "value")

    def __init__(self, value: T, close: Callable[[T], Awaitable[object]]) -> None:
        self.value: T | None = value
        self.loop = asyncio.get_running_loop()
        self._close = close
        self.generator = self._at_loop_end()
        # the first step registers the generator with the running loop and stops at its yield;
        # nothing in it awaits, so it runs here, without a task
        with contextlib.suppress(StopIteration):
            self.generator.__anext__().send(None)

    async def _at_loop_end(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            value, self.value = self.value, None
            if value is not None:
                try:
                    await self._close(value)
                except Exception:
                    # its type only: a client's repr may name its server's address
                    kind = type(value).__name__
                    log.debug("could not close a %s as its loop shut down", kind, exc_info=True)

    def end(self) -> None:
        """Forget the value (closed otherwise, or its loop closed) and finish the generator
        without the loop, so that its collection schedules nothing on the loop."""
        self.value = None
        with contextlib.suppress(StopIteration, RuntimeError):
            self.generator.aclose().send(None)
