"""AsyncRedisManager across event loops: asyncio.run() twice, pytest-asyncio's loop per test."""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings

from dalkit import AsyncRedisManager


def test_the_async_manager_serves_a_second_event_loop_and_leaves_no_socket_open(
    redis_url: str,
) -> None:
    key = f"loops-{uuid.uuid4().hex}"

    async def use(manager: AsyncRedisManager) -> tuple[bool, object, int]:
        await manager.client.set(key, "1", ex=60)
        healthy = (await manager.health_check()).ok
        return healthy, await manager.client.get(key), manager.pool_status()["created"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager = AsyncRedisManager(redis_url)
        first = asyncio.run(use(manager))
        second = asyncio.run(use(manager))  # raised RuntimeError('Event loop is closed')
        asyncio.run(manager.close())  # from a third loop
        del manager
        gc.collect()
    assert first == (True, b"1", 1)
    assert second == (True, b"1", 1)  # a pool of the new loop's own
    assert [str(warning.message) for warning in caught] == []
