"""Query counts and latency histograms per operation, and failed statements per operation and
error class, kept for the Prometheus collector in bounded memory (fixed buckets, a handful of
operations, a fixed set of error classes). No I/O."""

from __future__ import annotations

import bisect
import threading
from typing import Any

__all__ = ["BUCKETS_S", "QueryMetrics"]

#: histogram upper bounds, seconds (the +Inf bucket is implied)
BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    __slots__ = ("buckets", "count", "sum_s")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS_S) + 1)
        self.count = 0
        self.sum_s = 0.0


class QueryMetrics:
    """Per-operation (SELECT, INSERT, UPDATE, DELETE, COPY, OTHER) query histograms, with the
    buckets of ``BUCKETS_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._histograms: dict[str, _Histogram] = {}
        # (operation, error class) -> statements that raised it: both from fixed sets
        self._errors: dict[tuple[str, str], int] = {}

    def observe(self, operation: str, duration_s: float) -> None:
        """Count one ``operation`` statement that took ``duration_s`` seconds."""
        index = bisect.bisect_left(BUCKETS_S, duration_s)
        with self._lock:
            histogram = self._histograms.get(operation)
            if histogram is None:
                histogram = self._histograms[operation] = _Histogram()
            histogram.buckets[index] += 1
            histogram.count += 1
            histogram.sum_s += duration_s

    def fail(self, operation: str, error: str) -> None:
        """Count one ``operation`` statement that raised an ``error`` (its class's name).

        Args:
            operation: The statement's operation.
            error: The error's class (`dalkit.driver_errors.error_class`), never its message.
        """
        key = (operation, error)
        with self._lock:
            self._errors[key] = self._errors.get(key, 0) + 1

    def errors(self) -> dict[tuple[str, str], int]:
        """``(operation, error class) -> statements that raised it``, sorted.

        Returns:
            The counts so far.
        """
        with self._lock:
            return dict(sorted(self._errors.items()))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``operation -> {"buckets": [(le, cumulative count), ...], "count", "sum_s"}``."""
        with self._lock:
            raw = {op: (list(h.buckets), h.count, h.sum_s) for op, h in self._histograms.items()}
        result: dict[str, dict[str, Any]] = {}
        for operation, (buckets, count, sum_s) in sorted(raw.items()):
            cumulative, running = [], 0
            for bound, hits in zip((*BUCKETS_S, float("inf")), buckets, strict=True):
                running += hits
                cumulative.append((bound, running))
            result[operation] = {"buckets": cumulative, "count": count, "sum_s": sum_s}
        return result
