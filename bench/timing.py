"""Timing shared by the bench modules: variants interleaved across repeats, medians of ops/s."""

from __future__ import annotations

import gc
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter, process_time

Operation = Callable[[], object]

MIN_REPEATS = 20


def interleaved_samples(
    variants: Mapping[str, Operation],
    *,
    batch_s: float = 0.2,
    min_repeats: int = MIN_REPEATS,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """``name -> ops/s of each timed batch``, in repeat order, for each variant; ``cpu``, when
    given, gets ``name -> this process's CPU seconds per call of each batch``, which another
    process sharing the cores disturbs far less than the wall clock.

    Every repeat runs one timed batch of every variant, in an order rotated by one each
    repeat: slow drift (CPU frequency, the server's background work, a noisy neighbour)
    then falls on all variants alike instead of on whichever ran last, and the batches of
    one repeat can be compared pairwise (:func:`paired_ratio`).
    """
    names = list(variants)
    # a whole number of rotations puts every variant in every position equally often
    repeats = len(names) * math.ceil(min_repeats / len(names))
    sizes = {name: _calibrate(variants[name], batch_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu_s: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            ops, cpu_per_call = _batch(variants[name], sizes[name])
            samples[name].append(ops)
            cpu_s[name].append(cpu_per_call)
    if cpu is not None:
        cpu.update(cpu_s)
    return samples


def median_and_spread(samples: Sequence[float]) -> tuple[float, float]:
    """The median, and the interquartile range as a percentage of it."""
    median = statistics.median(samples)
    quartiles = statistics.quantiles(samples, n=4)
    return median, 100.0 * (quartiles[2] - quartiles[0]) / median


def paired_ratio(samples: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """Median and spread of the per-repeat ratios ``samples[i] / baseline[i]``.

    Batches of the same repeat ran seconds apart, so their ratio cancels the slow noise that
    widens each variant's own spread; this is the figure to compare against a target.
    """
    return median_and_spread([a / b for a, b in zip(samples, baseline, strict=True)])


def _calibrate(operation: Operation, batch_s: float) -> int:
    """How many calls fill ``batch_s``; the calls made to find out double as the warm-up."""
    calls, started = 0, perf_counter()
    while (elapsed := perf_counter() - started) < batch_s / 2 or calls < 10:
        operation()
        calls += 1
    return max(10, round(calls * batch_s / elapsed))


def _batch(operation: Operation, calls: int) -> tuple[float, float]:
    # a collection landing in one batch and not another is noise, not a property of the code
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started, cpu_started = perf_counter(), process_time()
        for _ in range(calls):
            operation()
        elapsed, cpu = perf_counter() - started, process_time() - cpu_started
    finally:
        if gc_was_enabled:
            gc.enable()
    return calls / elapsed, cpu / calls
