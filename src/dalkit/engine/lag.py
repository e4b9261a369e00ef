"""A replica's replay lag, from the replica monitor's samples of the primary's WAL position:
the age of the oldest position the replica has not replayed, so no clock on the replica. And
its bounds where the samples do not reach (a process started while the replica lagged, a gap in
the monitor's view of the primary).
"""

from __future__ import annotations

from collections import deque

__all__ = ["PrimarySamples"]

_KEPT = 10_000


class PrimarySamples:
    """The primary's WAL positions as the monitor saw them, oldest first."""

    def __init__(self) -> None:
        # (first seen, position, last seen, whether the monitor had lost sight of the primary
        # just before: its start, a fork, a failed probe)
        self._samples: deque[tuple[float, int, float, bool]] = deque(maxlen=_KEPT)
        self._watching = False  # no break since the last sample

    def add(self, now: float, lsn: int) -> None:
        """Record the primary's position.

        Args:
            now: ``time.monotonic()`` when it was read.
            lsn: The primary's WAL insert position.
        """
        if not self._samples or lsn > self._samples[-1][1]:
            self._samples.append((now, lsn, now, not self._watching))
        else:  # still there: nothing newer was written until now
            first, last_lsn, _, after_gap = self._samples[-1]
            self._samples[-1] = (first, last_lsn, now, after_gap)
        self._watching = True

    def lost(self) -> None:
        """The monitor (re)starts, or could not read the primary's position: what the primary
        writes until the next sample may be older than that sample."""
        self._watching = False

    def lag(self, now: float, replay_lsn: int, replay_age_s: float | None) -> float | None:
        """How far behind a replica that has replayed ``replay_lsn`` is.

        Args:
            now: ``time.monotonic()`` when it was probed.
            replay_lsn: The position it has replayed.
            replay_age_s: Seconds since the last transaction it replayed was committed, None
                when unknown.

        Returns:
            Seconds; None when it is behind every sample (or one after a gap) and nothing
            bounds what it misses.
        """
        previous: float | None = None  # when the last position it has was last seen current
        for seen_at, lsn, until, after_gap in self._samples:
            if lsn > replay_lsn:
                lag = max(0.0, now - seen_at)
                if previous is not None and not after_gap:
                    return lag  # what it misses came between the two samples
                # behind a sample taken after the monitor lost sight of the primary (or behind
                # every sample): what it misses may be older. It came after the last
                # transaction it replayed, and after the sample before, if any
                since = None if previous is None else now - previous
                bounds = [b for b in (replay_age_s, since) if b is not None]
                return max(lag, min(bounds)) if bounds else None
            previous = until
        return 0.0

    def trim(self, floor: int) -> None:
        """Forget the samples no replica needs: every one has replayed past ``floor``.

        Args:
            floor: The lowest position the replicas have replayed.
        """
        # the last sample every replica has passed stays: the one after it may follow a gap
        while len(self._samples) > 1 and self._samples[1][1] <= floor:
            self._samples.popleft()
