"""The Redis backend's own connections: reused between commands, replaced when Redis dropped
one (the command tried again at once), closed after a command that did not complete, and
closed with the backend; with asyncio, a set of them for each event loop."""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from dalkit import AsyncRedisManager, RedisManager
from dalkit.cache import AsyncRedisBackend, RedisBackend
from dalkit.cache.backends import redis_keys


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    manager = RedisManager(redis_url)
    redis_backend = RedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}")
    yield redis_backend
    redis_backend.close()
    manager.close()


@pytest.fixture
async def async_backend(redis_url: str) -> AsyncIterator[AsyncRedisBackend]:
    manager = AsyncRedisManager(redis_url)
    redis_backend = AsyncRedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}")
    yield redis_backend
    await redis_backend.close()
    await manager.close()


def _kill_clients(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as admin:
        admin.client_kill_filter(_type="normal", skipme=True)


def test_one_connection_serves_commands_one_after_another(backend: RedisBackend) -> None:
    for _ in range(3):
        backend.bump(["t"])
        backend.fetch("k", ["t"])
    assert len(backend._links.current().idle) == 1


def test_a_connection_redis_dropped_is_replaced_and_the_command_tried_again(
    backend: RedisBackend, redis_url: str
) -> None:
    backend.bump(["t"])
    _payload, tokens = backend.fetch("k", ["t"])
    _kill_clients(redis_url)
    assert backend.fetch("k", ["t"]) == (None, tokens)
    assert len(backend._links.current().idle) == 1


def test_a_command_that_failed_closes_its_connection(backend: RedisBackend) -> None:
    backend.fetch("k", ["t"])
    with pytest.raises(redis.exceptions.ResponseError):
        backend._command("NO-SUCH-COMMAND")
    assert len(backend._links.current().idle) == 0
    backend.fetch("k", ["t"])  # a new one
    assert len(backend._links.current().idle) == 1


def test_redis_down_raises_after_one_retry() -> None:
    manager = RedisManager("redis://127.0.0.1:1/0")
    down = RedisBackend(manager)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            down.fetch("k", ["t"])
        assert len(down._links.current().idle) == 0
    finally:
        down.close()
        manager.close()


def test_closing_the_backend_closes_its_idle_connections(backend: RedisBackend) -> None:
    backend.fetch("k", ["t"])
    backend.close()
    assert len(backend._links.current().idle) == 0


async def test_the_async_backend_replaces_a_dropped_connection(
    async_backend: AsyncRedisBackend, redis_url: str
) -> None:
    await async_backend.bump_async(["t"])
    _payload, tokens = await async_backend.fetch_async("k", ["t"])
    _kill_clients(redis_url)
    assert await async_backend.fetch_async("k", ["t"]) == (None, tokens)
    with pytest.raises(redis.exceptions.ResponseError):
        await async_backend._command("NO-SUCH-COMMAND")
    assert len(async_backend._links.current().idle) == 0


def test_a_forked_child_never_uses_its_parent_s_connections(backend: RedisBackend) -> None:
    backend.bump(["t"])
    inherited = backend._links.current().idle[0]
    backend._links.current().pid = -1  # as in a child forked after the parent used the backend
    backend.fetch("k", ["t"])
    assert len(backend._links.current().idle) == 1
    assert backend._links.current().idle[0] is not inherited


@pytest.mark.parametrize("packer", ["hiredis", "redis-py"])
async def test_commands_packed_by_either_packer_store_and_fetch_entries(
    backend: RedisBackend,
    async_backend: AsyncRedisBackend,
    packer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if packer == "redis-py":  # redis installed without hiredis: the connection packs
        monkeypatch.setattr(redis_keys, "_pack", None)
    tables = tuple(f"part_{i}" for i in range(400))  # a parent read: a token per partition
    _payload, tokens = backend.fetch("k", tables)
    backend.store("k", tokens, b"rows", 60)
    assert backend.fetch("k", tables) == (b"rows", tokens)
    backend.bump(tables[-1:])
    assert backend.fetch("k", tables)[0] is None
    _payload, tokens = await async_backend.fetch_async("k", tables)  # a prefix of its own
    await async_backend.store_async("k", tokens, b"rows", 60)
    assert await async_backend.fetch_async("k", tables) == (b"rows", tokens)
    await async_backend.bump_async(tables[:1])
    assert (await async_backend.fetch_async("k", tables))[0] is None


def test_the_async_backend_serves_a_second_event_loop_and_leaves_no_socket_open(
    redis_url: str,
) -> None:
    async def use(backend: AsyncRedisBackend) -> bool:
        table = f"t{uuid.uuid4().hex}"  # a new token: the pipelined SET NX
        _payload, tokens = await backend.fetch_async("k", [table])
        lock = await backend.lock_async("k")
        await backend.store_async("k", tokens, b"rows", 60)
        await backend.unlock_async(lock)
        served = await backend.fetch_async("k", [table]) == (b"rows", tokens)
        await backend.bump_async([table])
        return served and lock is not None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager = AsyncRedisManager(redis_url)
        backend = AsyncRedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}", stampede_lock=True)
        first = asyncio.run(use(backend))
        second = asyncio.run(use(backend))  # raised RuntimeError('Event loop is closed')
        asyncio.run(backend.close())  # from a third loop
        asyncio.run(manager.close())
        del backend, manager
        gc.collect()
    assert (first, second) == (True, True)
    assert [str(warning.message) for warning in caught] == []


async def test_a_manager_decoding_its_replies_still_serves_binary_entries(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    manager = RedisManager(redis_url, decode_responses=True)  # the application's own setting
    async_manager = AsyncRedisManager(redis_url, decode_responses=True)
    backend = RedisBackend(manager, prefix=prefix)
    async_backend = AsyncRedisBackend(async_manager, prefix=prefix)
    payload = b"\x80\x05rows"  # a pickle: no UTF-8 (every read failed to decode it)
    try:
        _payload, tokens = backend.fetch("k", ["t"])
        backend.store("k", tokens, payload, 60)
        assert backend.fetch("k", ["t"]) == (payload, tokens)
        assert await async_backend.fetch_async("k", ["t"]) == (payload, tokens)
    finally:
        backend.close()
        manager.close()
        await async_backend.close()
        await async_manager.close()
