"""LoopEnd, the one way dalkit closes what belongs to an event loop as that loop shuts down
(the async pools' idle connections, the Redis clients)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from dalkit.engine.loop_end import LoopEnd

kept: list[LoopEnd[Any]] = []  # the maker keeps a LoopEnd


def test_the_value_is_closed_on_its_loop_as_the_loop_shuts_down() -> None:
    closed: list[tuple[object, asyncio.AbstractEventLoop]] = []

    async def close(value: object) -> None:
        await asyncio.sleep(0)  # it may await: the loop still runs its shutdown
        closed.append((value, asyncio.get_running_loop()))

    async def main() -> asyncio.AbstractEventLoop:
        kept.append(LoopEnd("connections", close))
        assert closed == []
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert closed == [("connections", loop)]
    kept.clear()


def test_an_ended_value_is_not_closed_at_the_loops_end() -> None:
    closed: list[object] = []

    async def close(value: object) -> None:
        closed.append(value)

    async def main() -> None:
        end = LoopEnd("connections", close)
        kept.append(end)
        end.end()

    asyncio.run(main())
    assert closed == []
    kept.clear()


def test_a_failed_close_is_logged_by_the_values_type_never_its_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Client:
        def __repr__(self) -> str:
            return "Client(password='hunter2')"

    async def close(value: object) -> None:
        raise OSError("connection reset")

    async def main() -> None:
        kept.append(LoopEnd(Client(), close))

    with caplog.at_level(logging.DEBUG, logger="dalkit.pool"):
        asyncio.run(main())
    kept.clear()
    assert "could not close a Client as its loop shut down" in caplog.text
    assert "hunter2" not in caplog.text
