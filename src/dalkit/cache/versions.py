"""The invalidation scheme: every table has a version token, every entry carries the tokens
of its tables as they were read BEFORE its query ran, and an entry is served only while all of
them are still current.

Why this closes the reader/writer race: a writer replaces the tokens of the tables it wrote
after its COMMIT succeeded and before its transaction call returns (``on_commit``, awaited in
async code). A reader that computed its result from data older than that commit started its
query before the commit, so it read the tokens before the writer replaced them: its entry is
tagged with tokens that are no longer current, and no read can be served from it, however late
it is stored. A reader that read the new tokens ran its query after the commit (READ
COMMITTED takes a snapshot per statement), so its result includes the write. Hence reads at
REPEATABLE READ or SERIALIZABLE, whose snapshot may predate the tokens, bypass the cache, and
on SQLite (whose transaction keeps the snapshot of its first read) an entry is only stored
when its query opened the transaction.

Tokens are random, never counters: a Redis that lost its data (restart, flush, eviction)
gives a table a fresh token that no surviving entry can carry, and a missing token is created
before the query rather than read as "version 0". The pseudo-table ``*`` is part of every
entry's tables: bumping it (DDL, writes whose target is unknown) invalidates everything.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable

from dalkit.cache.tables import ALL

__all__ = ["Tokens", "decode_entry", "encode_entry", "entry_tables", "new_token"]

#: the tokens of an entry's tables, in the order of :func:`entry_tables`
Tokens = tuple[str, ...]


def new_token() -> str:
    return os.urandom(9).hex()


def entry_tables(tables: Iterable[str]) -> tuple[str, ...]:
    """The tables an entry depends on, in a fixed order, always including ``*``."""
    return tuple(sorted({ALL, *tables}))


def encode_entry(tokens: Tokens, payload: bytes) -> bytes:
    return pickle.dumps((tokens, payload), protocol=pickle.HIGHEST_PROTOCOL)


def decode_entry(raw: bytes) -> tuple[Tokens, bytes]:
    tokens, payload = pickle.loads(raw)
    return tuple(tokens), payload
