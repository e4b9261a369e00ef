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
        with self._lock:
            self._entries[key] = (tokens, payload, monotonic() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def bump(self, tables: Sequence[str]) -> None:
        with self._lock:
            for table in tables:
                self._tokens[table] = new_token()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._tokens.clear()

    def _token(self, table: str) -> str:
        token = self._tokens.get(table)
        if token is None:
            token = self._tokens[table] = new_token()
        return token

    async def fetch_async(self, key: str, tables: Sequence[str]) -> tuple[Any, Tokens]:
        return self.fetch(key, tables)

    async def store_async(self, key: str, tokens: Tokens, payload: Any, ttl: float) -> None:
        self.store(key, tokens, payload, ttl)

    async def bump_async(self, tables: Sequence[str]) -> None:
        self.bump(tables)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryBackend(max_entries={self.max_entries})"
