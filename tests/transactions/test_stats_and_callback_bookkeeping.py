"""TransactionStats and the savepoint-aware callback registry, without a database."""

from __future__ import annotations

import functools

from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.scope import Callback, TransactionScope
from dalkit.transaction.stats import TransactionStats


def test_stats_count_calls_retries_and_rollbacks_by_isolation_level() -> None:
    stats = TransactionStats()
    stats.record("SERIALIZABLE", committed=True, duration_s=0.010, retries=2, rolled_back=2)
    stats.record("SERIALIZABLE", committed=False, duration_s=0.030, retries=4, rolled_back=5)
    stats.record("DEFAULT", committed=True, duration_s=0.001)
    snapshot = stats.snapshot()
    assert {key: snapshot[key] for key in ("total", "committed", "failed", "retries")} == {
        "total": 3,
        "committed": 2,
        "failed": 1,
        "retries": 6,
    }
    assert snapshot["rolled_back"] == 7
    assert snapshot["success_rate"] == 2 / 3
    serializable = snapshot["by_isolation"]["SERIALIZABLE"]
    assert (serializable["total"], serializable["failed"], serializable["retries"]) == (2, 1, 6)
    assert snapshot["by_isolation"]["DEFAULT"]["success_rate"] == 1.0


def test_percentiles_use_the_nearest_rank_of_recorded_durations() -> None:
    stats = TransactionStats()
    for ms in range(1, 101):
        stats.record("DEFAULT", committed=True, duration_s=ms / 1000)
    assert stats.snapshot()["duration_ms"] == {"p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_percentiles_cover_a_bounded_window_of_the_latest_calls() -> None:
    stats = TransactionStats(window=100)
    for _ in range(10_000):
        stats.record("DEFAULT", committed=True, duration_s=1.0)
    for _ in range(100):
        stats.record("DEFAULT", committed=True, duration_s=0.002)
    snapshot = stats.snapshot()
    assert snapshot["total"] == 10_100
    # only the last 100 durations are kept: the 10,000 slow ones no longer count
    assert snapshot["duration_ms"] == {"p50": 2.0, "p95": 2.0, "p99": 2.0}


def test_reset_starts_the_figures_over() -> None:
    stats = TransactionStats()
    stats.record("DEFAULT", committed=False, duration_s=0.5, rolled_back=1)
    assert stats.snapshot(reset=True)["failed"] == 1
    assert stats.snapshot() == {
        "total": 0,
        "committed": 0,
        "discarded": 0,
        "rolled_back": 0,
        "failed": 0,
        "outcome_unknown": 0,
        "retries": 0,
        "success_rate": 1.0,
        "duration_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0},
        "by_isolation": {},
    }


def _scope() -> TransactionScope:
    return TransactionScope(owner=None, session=None, options=TransactionOptions())


def _names(callbacks: list[Callback]) -> list[str]:
    return [str(callback.fn()) for callback in callbacks]


def test_a_released_savepoint_hands_its_callbacks_to_the_level_around_it() -> None:
    scope = _scope()
    scope.add(lambda: "outer", on_commit=True, robust=False)
    scope.savepoint_started()
    scope.add(lambda: "inner", on_commit=True, robust=False)
    scope.savepoint_released()
    scope.add(lambda: "after", on_commit=True, robust=False)
    assert _names(scope.after_commit()) == ["outer", "inner", "after"]


def test_a_rolled_back_savepoint_drops_its_commit_callbacks_and_keeps_its_rollback_ones() -> None:
    scope = _scope()
    scope.add(lambda: "kept", on_commit=True, robust=False)
    scope.savepoint_started()
    scope.add(lambda: "dropped", on_commit=True, robust=False)
    scope.add(lambda: "undo inner", on_commit=False, robust=True)
    scope.savepoint_started()
    scope.add(lambda: "dropped too", on_commit=True, robust=False)
    scope.savepoint_released()
    scope.savepoint_rolled_back()
    scope.add(lambda: "undo outer", on_commit=False, robust=True)
    assert _names(scope.after_commit()) == ["kept", "undo inner"]
    assert _names(scope.after_rollback()) == ["undo inner", "undo outer"]


def test_ranked_callbacks_go_ahead_of_their_level_and_of_the_level_they_are_released_into() -> None:
    scope = _scope()
    steps = [("user", 0), (None, 1), ("inner user", 0), (None, 1), ("cache", 1), ("replicas", 2)]
    for name, rank in steps:
        if name is None:
            scope.savepoint_started()
        else:
            scope.add(functools.partial(str, name), on_commit=True, robust=rank > 0, rank=rank)
    scope.savepoint_released()  # the ranked ones go ahead of each level they join
    scope.savepoint_released()
    scope.add(lambda: "after", on_commit=True, robust=False)
    assert _names(scope.after_commit()) == ["replicas", "cache", "user", "inner user", "after"]
