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
before the query rather than read as "version 0". With read replicas, "ran its query after the
commit" also needs a node that has replayed it: a result is stored only when it was read on the
primary
(dalkit.engine.autoroute.route_miss), or on a replica that has replayed past the position
each token carries (``new_token(position)``). The pseudo-table ``*`` is part of every
entry's tables: bumping it (DDL, writes whose target is unknown) invalidates everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from dalkit.cache.tables import ALL

__all__ = ["Tokens", "encode_entry", "entry_payload", "entry_tables", "new_token", "replayed_by"]

#: the tokens of an entry's tables, in the order of ``entry_tables``
Tokens = tuple[str, ...]

# an entry is its tokens in a header, then its payload: checking it needs no unpickling, and an
# entry of another format (an older dalkit) never matches and is read as a miss
_FORMAT = "dalkit-entry-1:"


def new_token(position: int | None = None) -> str:
    """A fresh random token (never a counter: see the module docstring).

    Args:
        position: With read replicas, the primary's WAL position read after the commit that
            replaces the token: a replica that has replayed past it may compute entries
            tagged with this token. None: only the primary may.

    Returns:
        The token, ``random@POSITION`` when a position is given.
    """
    token = os.urandom(9).hex()
    return token if position is None else f"{token}@{position:X}"


def replayed_by(tokens: Tokens) -> int | None:
    """The WAL position a node must have replayed to compute an entry tagged ``tokens``.

    Args:
        tokens: The current tokens of an entry's tables.

    Returns:
        The latest position the tokens carry; None when one carries none (made when missing,
        or by a write whose position is unknown): then only the primary may compute it.
    """
    needed = 0
    for token in tokens:
        _random, marked, position = token.partition("@")
        if not marked:
            return None
        needed = max(needed, int(position, 16))
    return needed


def entry_tables(tables: Iterable[str]) -> tuple[str, ...]:
    """The tables an entry depends on, in a fixed order, always including ``*``.

    Args:
        tables: The tables the statement reads.

    Returns:
        The sorted table names, ``*`` among them.
    """
    return tuple(sorted({ALL, *tables}))


def encode_entry(tokens: Tokens, payload: bytes) -> bytes:
    """The stored form of an entry: its tokens, then its payload.

    Args:
        tokens: The tokens of the entry's tables, read before its query ran.
        payload: The pickled result.

    Returns:
        The bytes to store.
    """
    return _header(tokens) + payload


def entry_payload(raw: bytes | None, tokens: Tokens) -> bytes | None:
    """The payload of a stored entry when it carries exactly ``tokens``, else None.

    Args:
        raw: What the backend holds under the entry's key (None: nothing).
        tokens: The current tokens of the entry's tables.

    Returns:
        The payload, or None when the entry is missing, stale or of another format.
    """
    if raw is None:
        return None
    header = _header(tokens)
    return raw[len(header) :] if raw.startswith(header) else None


def _header(tokens: Tokens) -> bytes:
    return f"{_FORMAT}{','.join(tokens)}\n".encode()
