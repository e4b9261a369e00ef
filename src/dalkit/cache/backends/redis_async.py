"""The Redis backend of the query cache: entries and table tokens in a Redis server shared by
every process.

A read is one round trip: one ``MGET`` of the entry and its tables' tokens. A commit's
invalidation is one ``MSET`` of fresh tokens. Nothing ever scans the keyspace. These two
commands go through connections the backend keeps idle itself (see ``_command``); with
asyncio, each event loop has a set of its own, closed as that loop shuts down
(``dalkit.redis.loops``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

from dalkit.cache.backends.redis_keys import (
    DEFAULT_PREFIX,
    RedisKeys,
    fast_failing_client,
    pack_command,
    retryable_errors,
)
from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.versions import Tokens, encode_entry, new_token
from dalkit.redis.loops import PerLoop
from dalkit.redis.manager_async import AsyncRedisManager


class _Link:
    """The backend's connections to Redis (on one event loop, with asyncio): a fast-failing
    client for pipelines and locks, and the idle connections of its own commands."""

    __slots__ = ("client", "idle", "pid")

    def __init__(self, manager: AsyncRedisManager) -> None:
        self.client = fast_failing_client(manager)
        self.idle: deque[Any] = deque()
        self.pid = os.getpid()

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().disconnect()
        await self.client.connection_pool.disconnect()


class AsyncRedisBackend(RedisKeys):
    """Query-cache entries in Redis, shared by every process using the same server.

    Args:
        manager: The Redis to use; the backend opens a pool of its own with its settings.
        prefix: What every key of this backend starts with.
        stampede_lock: Take a Redis lock on a missed key, so that processes missing the
            same key run its query once in total; the others wait for the entry (at most
            ``lock_timeout``), then run it themselves. Without it, once per process.
        lock_timeout: Seconds a lock is held and waited for at most.
        timeout_pause: Seconds Redis is not asked again after a command timed out (a hung
            Redis): meanwhile reads bypass the cache and invalidations wait as pending,
            without a round trip. Doubled for each timeout in a row; 0: no pause.
        timeout_pause_max: The longest such pause, in seconds.

    Raises:
        CacheConfigurationError: ``manager`` is of the other kind (sync/async), or
            ``lock_timeout`` is not positive, or the pauses are out of range.

    Examples:
        ``AsyncQueryCache(AsyncRedisBackend(AsyncRedisManager(url), stampede_lock=True))``
    """

    def __init__(
        self,
        manager: AsyncRedisManager,
        *,
        prefix: str = DEFAULT_PREFIX,
        stampede_lock: bool = False,
        lock_timeout: float = 10.0,
        timeout_pause: float = 1.0,
        timeout_pause_max: float = 5.0,
    ) -> None:
        if not isinstance(manager, AsyncRedisManager):
            raise CacheConfigurationError(
                f"{type(self).__name__} needs a dalkit.{AsyncRedisManager.__name__}, not a "
                f"{type(manager).__name__} (RedisBackend goes with RedisManager and QueryCache, "
                "AsyncRedisBackend with AsyncRedisManager and AsyncQueryCache)"
            )
        super().__init__(
            prefix,
            stampede_lock=stampede_lock,
            lock_timeout=lock_timeout,
            timeout_pause=timeout_pause,
            timeout_pause_max=timeout_pause_max,
        )
        self.manager = manager
        self._links = PerLoop(partial(_Link, manager), _Link.close)
        self._retryable = retryable_errors()
        self._timeout = self._retryable[1]

    async def close(self) -> None:
        """Close the backend's connections (its pool is its own); it can be used afterwards."""
        await self._links.current().close()

    async def _command(self, *args: Any) -> Any:
        """Send one command and read its reply, on an idle connection of the backend's own.

        redis-py's pool checks every connection it lends for unread data (one ``poll``
        system call) and the client wraps each command in its retry and metrics layers:
        about 20 us a command, a fifth of a hit. Here a connection whose command did not
        complete is closed, never reused, so none can hold unread data; a failed connection
        is replaced and the command tried once more (the cache's commands are idempotent),
        as the fast-failing client does; a timeout pauses the backend instead
        (`dalkit.cache.backends.pause`). The command is packed by `pack_command`.
        """
        self.pause.check()
        link = self._links.current()
        if link.pid != os.getpid():  # a forked child: the sockets are its parent's
            link.idle, link.pid = deque(), os.getpid()
        idle = link.idle
        retried = False
        while True:
            try:
                connection = idle.pop()  # deque.pop/append: atomic between threads
            except IndexError:
                pool = link.client.connection_pool
                connection = pool.connection_class(**pool.connection_kwargs)
            try:
                await connection.send_packed_command(pack_command(connection, args))
                reply = await connection.read_response()
            except self._retryable as error:
                await connection.disconnect()
                if isinstance(error, self._timeout):  # asked again, a hung Redis waits twice
                    self.pause.timed_out(error)
                    raise
                if retried:
                    raise
                retried = True
                continue
            except BaseException:
                await connection.disconnect()
                raise
            idle.append(connection)
            self.pause.answered()
            return reply

    async def fetch_async(self, key: str, tables: Sequence[str]) -> tuple[bytes | None, Tokens]:
        """The entry of ``key`` if it is current, and the current tokens of ``tables``.

        Args:
            key: The entry's key.
            tables: The token names of the tables the entry depends on.

        Returns:
            The payload (None: missing or stale), and the tokens to tag a new entry with.
        """
        names = self.token_keys(tables)
        raw, *values = await self._command("MGET", key, *names)
        if None in values:
            pipe = self._links.current().client.pipeline(transaction=False)
            for name, value in zip(names, values, strict=True):
                if value is None:
                    pipe.set(name, new_token(0), nx=True)  # made, not bumped: no commit
            pipe.mget(names)
            try:
                values = (await pipe.execute())[-1]
            except self._timeout as error:
                self.pause.timed_out(error)
                raise
            return None, self.tokens(values)  # an entry can never carry a token just made
        tokens = self.tokens(values)
        return self.decide(raw, tokens), tokens

    async def store_async(self, key: str, tokens: Tokens, payload: bytes, ttl: float) -> None:
        """Store an entry for ``ttl`` seconds, tagged with the ``tokens`` read before its query.

        Args:
            key: The entry's key.
            tokens: The tables' version tokens, read before the query ran.
            payload: The serialised result.
            ttl: Seconds the entry stays.
        """
        entry = encode_entry(tokens, payload)
        await self._command("SET", key, entry, "PX", max(1, int(ttl * 1000)))

    async def bump_async(self, tables: Sequence[str], position: int | None = None) -> None:
        """Give ``tables`` fresh tokens, in one ``MSET``: their entries become unservable.

        Args:
            tables: The names of the tables written.
            position: The primary's WAL position after the commit (with read replicas).
        """
        fresh = [part for name in self.token_keys(tables) for part in (name, new_token(position))]
        await self._command("MSET", *fresh)

    async def lock_async(self, key: str) -> Any:
        """Hold the stampede lock of ``key``, waiting for it up to ``lock_timeout``.

        Args:
            key: The missed entry's key.

        Returns:
            The held lock, to pass to [`unlock_async`][dalkit.cache.AsyncRedisBackend.unlock_async];
            None when the backend takes no locks, the wait timed out or Redis failed (then
            the caller runs its query unlocked: a lock never makes a read fail).
        """
        if not self.stampede_lock:
            return None
        lock = self._links.current().client.lock(self.lock_key(key), **self.lock_options())
        try:
            self.pause.check()
            acquired = await lock.acquire()
        except Exception as error:
            if isinstance(error, self._timeout):
                self.pause.timed_out(error)
            return None
        self.pause.answered()
        return lock if acquired else None

    async def unlock_async(self, lock: Any) -> None:
        """Release a lock taken by [`lock_async`][dalkit.cache.AsyncRedisBackend.lock_async]
        (an expired one, or a failing Redis, is left to the lock's expiry, as is the lock
        of a backend that a timeout paused: releasing it would wait another socket timeout).

        Args:
            lock: What `lock_async()` returned.
        """
        try:
            self.pause.check()  # Redis just hung: the lock is left to expire, not waited on
            await lock.release()
        except Exception as error:
            if isinstance(error, self._timeout):
                self.pause.timed_out(error)
            return
        self.pause.answered()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.manager.url!r}, prefix={self.prefix!r})"
