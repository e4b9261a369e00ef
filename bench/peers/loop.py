"""One event loop for every async peer, driven from synchronous timing code.

Every call runs in the same context: Tortoise keeps its initialised state in a context variable,
which a fresh context per call (``asyncio.run``) would lose.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.context = contextvars.copy_context()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        task = self.loop.create_task(coroutine, context=self.context)
        return self.loop.run_until_complete(task)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def in_sequence(
    fn: Callable[[int], Awaitable[object]], args: Callable[[], int], n: int
) -> None:
    """``n`` awaited calls one after another: one loop entry is shared by ``n`` requests, so
    entering the loop from sync timing code costs each request almost nothing."""
    for _ in range(n):
        await fn(args())


async def at_once(fn: Callable[[int], Awaitable[object]], args: Callable[[], int], n: int) -> None:
    """``n`` concurrent tasks, as ``n`` requests arriving together."""
    await asyncio.gather(*(fn(args()) for _ in range(n)))
