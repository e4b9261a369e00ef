"""MemoryBackend: entries and table tokens in this process, LRU-bounded, thread-safe."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from time import monotonic
from typing import Any

from dalkit.cache.errors import CacheConfigurationError
from dalkit.cache.versions import Tokens, new_token

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Entries of one process, the least recently used dropped past ``max_entries``.

    No I/O: the async cache calls the same methods through ``*_async`` wrappers.

    Args:
        max_entries: How many entries to keep at most.

    Raises:
        CacheConfigurationError: ``max_entries`` is below 1.

    Examples:
        ``QueryCache(MemoryBackend(max_entries=10_000))``
    """

    shared = False

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise CacheConfigurationError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Tokens, Any, float]] = OrderedDict()
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.prefix = "dalkit:cache"

    def fetch(self, key: str, tables: Sequence[str]) -> tuple[Any, Tokens]:
        """The entry of ``key`` if it is current, and the current tokens of ``tables``.

        Args:
            key: The entry's key.
            tables: The token names of the tables the entry depends on.

        Returns:
            The payload (None: missing, stale or expired), and the tokens to tag a new
            entry with.
        """
        with self._lock:
            tokens = tuple(self._token(table) for table in tables)
            entry = self._entries.get(key)
            if entry is None:
                return None, tokens
            if entry[0] != tokens or entry[2] <= monotonic():
                del self._entries[key]
                return None, tokens
            self._entries.move_to_end(key)
            return entry[1], tokens

    def store(self, key: str, tokens: Tokens, payload: Any, ttl: float) -> None:
        """Store an entry for ``ttl`` seconds, tagged with the ``tokens`` read before its query.

        Args:
            key: The entry's key.
            tokens: The tables' version tokens, read before the query ran.
            payload: The serialised result.
            ttl: Seconds the entry stays.
        """
        with self._lock:
            self._entries[key] = (tokens, payload, monotonic() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def bump(self, tables: Sequence[str], position: int | None = None) -> None:
        """Give ``tables`` fresh tokens: their entries become unservable.

        Args:
            tables: The names of the tables written.
            position: The primary's WAL position after the commit (with read replicas).
        """
        with self._lock:
            for table in tables:
                self._tokens[table] = new_token(position)

    def clear(self) -> None:
        """Drop every entry and token."""
        with self._lock:
            self._entries.clear()
            self._tokens.clear()

    def _token(self, table: str) -> str:
        token = self._tokens.get(table)
        if token is None:
            token = self._tokens[table] = new_token(0)  # made, not bumped: no commit to wait for
        return token

    async def fetch_async(self, key: str, tables: Sequence[str]) -> tuple[Any, Tokens]:
        """[`fetch`][dalkit.cache.MemoryBackend.fetch], for the async cache.

        Args:
            key: The entry's key.
            tables: The tables its query reads.

        Returns:
            ``(payload or None, the tables' current tokens)``.
        """
        return self.fetch(key, tables)

    async def store_async(self, key: str, tokens: Tokens, payload: Any, ttl: float) -> None:
        """[`store`][dalkit.cache.MemoryBackend.store], for the async cache.

        Args:
            key: The entry's key.
            tokens: The tables' version tokens, read before the query ran.
            payload: The serialised result.
            ttl: Seconds the entry stays.
        """
        self.store(key, tokens, payload, ttl)

    async def bump_async(self, tables: Sequence[str], position: int | None = None) -> None:
        """[`bump`][dalkit.cache.MemoryBackend.bump], for the async cache.

        Args:
            tables: The names of the tables written.
            position: The primary's WAL position after the commit (with read replicas).
        """
        self.bump(tables, position)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryBackend(max_entries={self.max_entries})"
