"""Values that belong to an event loop (redis-py's asyncio connections do): one per running loop,
closed as that loop shuts down (`dalkit.engine.loop_end`); and their sync twin, one value for
the object's whole life.

The async sources that hold such a value (``AsyncRedisManager`` through `AsyncClients`,
``AsyncRedisBackend``) name `PerLoop`; their generated sync twins name `Once` in its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from dalkit.engine.loop_end import LoopEnd

__all__ = ["Once", "PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """A value for the running event loop: another loop (``asyncio.run()`` twice,
    pytest-asyncio's loop per test) gets one built for it, and each loop closes its own as it
    shuts down (``asyncio.run()``, ``asyncio.Runner`` and pytest-asyncio close their async
    generators then), while it can still close sockets. One loop at a time.

    Args:
        build: Makes a value; called now (the value outside a loop, and the first loop's),
            then once for each other loop.
        close: Closes a value, on the loop it served.
    """

    def __init__(self, build: Callable[[], T], close: Callable[[T], Awaitable[object]]) -> None:
        self._build = build
        self._close = close
        self._value = build()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the value serves
        self._closer: LoopEnd[T] | None = None  # closes the value as that loop shuts down

    def current(self) -> T:
        """The value of the running loop.

        Returns:
            The value, new when the running loop is another than the last one's.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside a loop: nothing to follow
            return self._value
        if loop is not self._loop:
            if self._loop is not None:  # the old loop's connections cannot serve this one
                self._value = self._build()
            self._loop = loop
            self._closer = LoopEnd(self._value, self._close)
        return self._value


class Once(Generic[T]):
    """The sync twin of `PerLoop`: one value, built now, for the object's whole life.

    Args:
        build: Makes the value.
        close: Not called (the owner closes the value); the same signature as `PerLoop`'s.
    """

    def __init__(self, build: Callable[[], T], close: Callable[[T], object]) -> None:
        self._value = build()

    def current(self) -> T:
        """The value.

        Returns:
            The value built at the start.
        """
        return self._value
