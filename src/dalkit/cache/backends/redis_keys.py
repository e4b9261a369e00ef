"""What RedisBackend and AsyncRedisBackend share without I/O: key names, the entry check, the
stampede-lock settings and the fast-failing client each of them talks through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dalkit.cache.backends.pause import TimeoutPause
from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.tables import each_named
from dalkit.cache.versions import Tokens, entry_payload

__all__ = [
    "DEFAULT_PREFIX",
    "LOCK_POLL_S",
    "RedisKeys",
    "fast_failing_client",
    "pack_command",
    "retryable_errors",
]

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - dalkit's redis extra installs it
    _pack = None

DEFAULT_PREFIX = "dalkit:cache"
#: how often a process waiting for another's stampede lock asks whether it is free
LOCK_POLL_S = 0.02


class RedisKeys:
    """Key naming and the decisions that need no I/O, shared by both Redis backends.

    Args:
        prefix: What every key of this backend starts with.
        stampede_lock: Whether a miss takes a Redis lock on its key, so that processes
            missing the same key run its query once in total.
        lock_timeout: Seconds a lock is held at most (it expires if its holder dies) and
            waited for at most (then the waiting process runs the query itself).

    Raises:
        CacheConfigurationError: ``lock_timeout`` is not positive.
    """

    shared = True

    def __init__(
        self,
        prefix: str,
        *,
        stampede_lock: bool,
        lock_timeout: float,
        timeout_pause: float,
        timeout_pause_max: float,
    ) -> None:
        if lock_timeout <= 0:
            raise CacheConfigurationError(f"lock_timeout must be positive, not {lock_timeout}")
        #: when Redis may be asked again after a timeout
        self.pause = TimeoutPause(timeout_pause, timeout_pause_max)
        self.prefix = prefix
        self.stampede_lock = stampede_lock
        self.lock_timeout = float(lock_timeout)
        self._token_keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def token_keys(self, tables: Sequence[str]) -> Sequence[str]:
        """The Redis keys of the tokens of ``tables``."""
        return each_named(tables, f"{self.prefix}:v:".__add__, self._token_keys)

    @staticmethod
    def lock_key(key: str) -> str:
        """The Redis key of the stampede lock of the entry ``key``."""
        return f"{key}:lock"

    @staticmethod
    def decide(raw: bytes | None, tokens: Tokens) -> bytes | None:
        """The payload of ``raw`` when it is an entry carrying ``tokens``, else None."""
        return entry_payload(raw, tokens)

    @staticmethod
    def tokens(values: Sequence[Any]) -> Tokens:
        """Tokens as read from Redis (bytes), as strings."""
        # a partitioned table's read has a token per partition: decoded in C
        return tuple(map(bytes.decode, values))

    def lock_options(self) -> dict[str, Any]:
        """The keyword arguments of ``client.lock()`` for a stampede lock."""
        return {
            "timeout": self.lock_timeout,
            "sleep": LOCK_POLL_S,
            "blocking_timeout": self.lock_timeout,
            "thread_local": False,  # one Lock object per miss, released by its own caller
            "raise_on_release_error": False,  # an expired lock is no failure here
        }


def fast_failing_client(manager: Any) -> Any:
    """A client on a pool of its own, configured like ``manager``'s but retrying a failed
    command once and at once, and never decoding replies.

    redis-py's default backoff would make every cache call wait seconds while Redis is
    down, where bypassing the cache costs nothing. A timeout is not retried.

    Args:
        manager: The RedisManager or AsyncRedisManager whose configuration to copy.

    Returns:
        A client of the same kind (sync or asyncio) as the manager's.
    """
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client_module: Any
    retry: Any
    # not after a timeout: a Redis that hangs would make the caller wait twice
    # (dalkit.cache.backends.pause keeps it from being asked again for a while)
    again = (redis.ConnectionError,)
    if isinstance(manager.client, redis.asyncio.Redis):
        client_module, retry = redis.asyncio, AsyncRetry(NoBackoff(), 1, supported_errors=again)
    else:
        client_module, retry = redis, Retry(NoBackoff(), 1, supported_errors=again)
    config = manager.config
    # entries are pickles and the header's tokens are read as bytes: a manager configured to
    # decode its replies (``decode_responses=True``) made every read fail to decode one
    kwargs = {**config.pool_kwargs(), "retry": retry, "decode_responses": False}
    pool = client_module.ConnectionPool.from_url(config.url, **kwargs)
    return client_module.Redis(connection_pool=pool)


def pack_command(connection: Any, args: tuple[Any, ...]) -> list[bytes]:
    """One command (str, bytes and int arguments) in the Redis protocol, for ``connection``'s
    ``send_packed_command``.

    hiredis packs in C what redis-py's packer first walks in Python, argument by argument: a
    partitioned table's read sends a token key per partition. A Redis hit on a parent of 365
    partitions took 334-366 us packed here against 377 us packed by redis-py (one process,
    timed in turn); ``python -m bench cache`` measures such hits. Without hiredis (redis-py
    installed without its extra), the connection's own packer.
    """
    return [_pack(args)] if _pack is not None else list(connection.pack_command(*args))


def retryable_errors() -> tuple[type[Exception], type[Exception]]:
    """The redis-py errors after which a command's connection is dropped: a failed one, after
    which the command is tried again once on a new connection (the cache's commands are
    idempotent), and a timeout, after which it is not (Redis may hang: the caller would wait
    twice) and the backend pauses (`dalkit.cache.backends.pause`)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError)
