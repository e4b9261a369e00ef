"""A context's read-your-writes position (what its reads must see) as `ReplicaSet` keeps it, and
what happens when the primary's position cannot be read after a commit (a connection lost right
after COMMIT, a primary going down): the position is then *lost*, and the context reads from the
primary until a read of the primary's insert position that started after the loss (its own next
commit's, another context's, the monitor's next sample) says how far a replica must have
replayed. Fail safe, never fail stale: with the last known position kept instead, its reads
went on to replicas that had not replayed the commit.
"""

from __future__ import annotations

from dalkit.engine.lsn import parse_lsn

__all__ = [
    "LOST_TOKEN",
    "LOST_TOKEN_POSITION",
    "LatestPrimaryRead",
    "Position",
    "inside",
    "with_write",
]

#: the token of a context whose position is lost: a valid WAL position no replica reaches, so a
#: process that does not know this convention reads from the primary too. One that does
#: (`ReplicaSet.require`) takes it as lost since it got it, and resolves it as its own
LOST_TOKEN = "FFFFFFFF/FFFFFFFF"
LOST_TOKEN_POSITION = parse_lsn(LOST_TOKEN)


class Position:
    """A context's read-your-writes position: what its reads must see (tokens it was handed and
    its own writes) and its own writes alone, which outlast a `ReplicaSet.require()` block.

    One made by ``require()`` is ``shared``: changed in place, so the contexts copied inside
    its block (a sync endpoint's worker thread, a task) record their writes in it. Any other is
    replaced on change, so contexts copied from, say, a server's main one do not pool their
    writes and send every request's reads to the primary.

    ``lost`` is when (``time.monotonic()``) a position of it could not be read, None when every
    one was; ``own_lost`` the same for its own writes (which outlast the block)."""

    __slots__ = ("lost", "own", "own_lost", "required", "shared")

    def __init__(
        self,
        required: int = 0,
        own: int = 0,
        shared: bool = False,
        lost: float | None = None,
        own_lost: float | None = None,
    ) -> None:
        self.required = required
        self.own = own
        self.shared = shared
        self.lost = lost
        self.own_lost = own_lost

    def resolve(self, reads: LatestPrimaryRead) -> None:
        """Replace a lost position by a read of the primary's that started after the loss: it
        includes every commit that had returned then. Changed in place, whether shared or not:
        every context holding it had the same loss, and the read covers it for each."""
        if self.lost is not None and reads.started >= self.lost:
            self.required = max(self.required, reads.lsn)
            self.lost = None
        if self.own_lost is not None and reads.started >= self.own_lost:
            self.own = max(self.own, reads.lsn)
            self.own_lost = None


class LatestPrimaryRead:
    """The latest read of the primary's insert position: when it started, and what it read."""

    __slots__ = ("lsn", "started")

    def __init__(self) -> None:
        self.started = float("-inf")
        self.lsn = 0

    def add(self, started: float, lsn: int) -> None:
        """Record a read of the primary's insert position.

        Args:
            started: ``time.monotonic()`` before it was sent.
            lsn: What it read.
        """
        if started >= self.started:
            self.started = started
            self.lsn = max(self.lsn, lsn)


def with_write(position: Position | None, lsn: int, lost: float | None) -> Position | None:
    """A context's position after a write of its own.

    Args:
        position: Its position now.
        lsn: The primary's position read after the commit (0 when it could not be read).
        lost: ``time.monotonic()`` when the read failed, None when it did not.

    Returns:
        The position to set in the context, or None when ``position`` (shared) was changed in
        place.
    """
    if position is None:
        return Position(lsn, lsn, lost=lost, own_lost=lost)
    if position.shared:
        position.required = max(position.required, lsn)
        position.own = max(position.own, lsn)
        if lost is not None:  # the later loss: a read that started after it covers both
            position.lost = position.own_lost = lost
        return None
    return Position(
        max(position.required, lsn),
        max(position.own, lsn),
        lost=position.lost if lost is None else lost,
        own_lost=position.own_lost if lost is None else lost,
    )


def inside(outer: Position | None, lsn: int, now: float) -> Position:
    """The shared position of a `ReplicaSet.require()` block.

    Args:
        outer: The context's position before the block.
        lsn: The token's position (`LOST_TOKEN_POSITION`: lost where it was handed out).
        now: ``time.monotonic()``: a lost token is lost since then, here.

    Returns:
        The block's position.
    """
    inner = Position(shared=True)
    if outer is not None:
        inner = Position(outer.required, outer.own, True, outer.lost, outer.own_lost)
    if lsn == LOST_TOKEN_POSITION:
        inner.lost = now
    else:
        inner.required = max(inner.required, lsn)
    return inner
