"""Transaction counters, latency percentiles and latency histograms, overall and by isolation
level, in bounded memory: durations are kept in a ring of the most recent ones, and counted in
fixed buckets. No I/O.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from typing import Any

__all__ = ["DURATION_BUCKETS_S", "TransactionStats"]

#: durations kept per isolation level (and overall) for the percentiles
WINDOW = 2048
_PERCENTILES = (("p50", 50), ("p95", 95), ("p99", 99))
#: upper bounds (seconds) of the duration histogram's buckets; the +Inf bucket is implied
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Tally:
    __slots__ = (
        "buckets",
        "committed",
        "discarded",
        "durations_s",
        "failed",
        "outcome_unknown",
        "retries",
        "rolled_back",
        "sum_s",
    )

    def __init__(self, window: int) -> None:
        self.committed = self.failed = self.retries = self.rolled_back = 0
        self.outcome_unknown = self.discarded = 0
        # seconds as recorded: converting to milliseconds waits for a snapshot
        self.durations_s: deque[float] = deque(maxlen=window)
        # every call since the last reset, not just the window: Prometheus wants counters
        self.buckets = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.sum_s = 0.0

    def histogram(self) -> dict[str, Any]:
        """``{"buckets": [(upper bound s, cumulative count), ...], "count", "sum_s"}``."""
        cumulative, running = [], 0
        for bound, hits in zip((*DURATION_BUCKETS_S, math.inf), self.buckets, strict=True):
            running += hits
            cumulative.append((bound, running))
        return {"buckets": cumulative, "count": running, "sum_s": self.sum_s}


def _figures(tallies: list[_Tally]) -> dict[str, Any]:
    committed = sum(t.committed for t in tallies)
    failed = sum(t.failed for t in tallies)
    discarded = sum(t.discarded for t in tallies)
    ordered = sorted(s for t in tallies for s in t.durations_s)
    return {
        "total": committed + failed + discarded,
        "committed": committed,
        "discarded": discarded,
        "rolled_back": sum(t.rolled_back for t in tallies),
        "failed": failed,
        "outcome_unknown": sum(t.outcome_unknown for t in tallies),
        "retries": sum(t.retries for t in tallies),
        # an idle database has failed nothing, nor has a call that rolled itself back
        "success_rate": committed / (committed + failed) if committed + failed else 1.0,
        "duration_ms": {name: _nearest_rank(ordered, q) for name, q in _PERCENTILES},
    }


def _nearest_rank(ordered: list[float], percentile: int) -> float:
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return round(ordered[rank - 1] * 1000.0, 3)


class TransactionStats:
    """What the transaction runner did, as read by ``db.transaction_stats()``.

    ``total`` counts transaction calls that finished (``committed`` + ``failed`` +
    ``discarded``, the calls that ended without an error after their own
    ``session.rollback()``, which ``success_rate`` leaves out); a call that was retried counts
    once, its extra runs in ``retries``. ``outcome_unknown`` counts the failed calls whose
    COMMIT was interrupted, so that whether they committed is unknown. ``rolled_back`` counts
    database transactions rolled back, retried runs and discarded calls included.
    ``duration_ms`` spans a whole call, retries and backoff included, over the last ``window``
    calls of each isolation level.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._by_isolation: dict[str, _Tally] = {}

    def record(
        self,
        isolation: str,
        committed: bool,
        duration_s: float,
        retries: int = 0,
        rolled_back: int = 0,
        outcome_unknown: bool = False,
        discarded: bool = False,
    ) -> None:
        """One finished transaction call (``discarded``: it ended, no error, after its own
        ``session.rollback()``, so nothing committed whatever ``committed`` says)."""
        with self._lock:
            tally = self._by_isolation.get(isolation)
            if tally is None:
                tally = self._by_isolation[isolation] = _Tally(self._window)
            if discarded:
                tally.discarded += 1
            elif committed:
                tally.committed += 1
            else:
                tally.failed += 1
            if retries or rolled_back:  # most calls neither retry nor roll back
                tally.retries += retries
                tally.rolled_back += rolled_back
            if outcome_unknown:
                tally.outcome_unknown += 1
            tally.durations_s.append(duration_s)
            tally.buckets[bisect.bisect_left(DURATION_BUCKETS_S, duration_s)] += 1
            tally.sum_s += duration_s

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        """Counters, ``success_rate`` and ``duration_ms`` percentiles, with the same figures
        per isolation level under ``by_isolation`` ("DEFAULT" when none was asked for); each
        level also has its ``duration_histogram`` (see ``_Tally.histogram``)."""
        with self._lock:
            levels = sorted(self._by_isolation.items())
            stats = _figures([tally for _, tally in levels])
            stats["by_isolation"] = {
                level: {**_figures([tally]), "duration_histogram": tally.histogram()}
                for level, tally in levels
            }
            if reset:
                self._by_isolation = {}
        return stats
