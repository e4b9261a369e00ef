"""RetryPolicy and error classification: pure decisions, no database."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm.exc import StaleDataError

from dalkit import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConnectionFailedError,
    ConnectionLostError,
    DatabaseBusyError,
    DatabaseError,
    DeadlockError,
    RetryExhaustedError,
    RetryPolicy,
    SerializationError,
    StatementTimeoutError,
    UniqueViolationError,
)
from dalkit.transaction.retry import RetryState, breaks_commit, is_retryable


@given(
    base=st.floats(0, 10),
    spread=st.floats(0, 100),
    jitter=st.floats(0, 1),
    retry_number=st.integers(1, 10_000),
    fraction=st.floats(0, 1, exclude_max=True),
)
def test_a_delay_never_exceeds_max_delay_nor_goes_negative(
    base: float, spread: float, jitter: float, retry_number: int, fraction: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=base + spread, jitter=jitter)
    delay = policy.delay(retry_number, fraction)
    assert 0.0 <= delay <= policy.max_delay


@given(retry_number=st.integers(1, 20))
def test_without_jitter_the_delay_doubles_until_the_cap(retry_number: int) -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=1.0, jitter=0.0)
    assert policy.delay(retry_number, 0.5) == min(1.0, 0.01 * 2 ** (retry_number - 1))


def test_full_jitter_spreads_a_delay_over_zero_to_the_ceiling() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=1.0)
    assert policy.delay(1, 0.0) == pytest.approx(0.1)
    assert policy.delay(1, 0.75) == pytest.approx(0.025)


def test_an_integer_is_shorthand_for_a_number_of_attempts() -> None:
    assert RetryPolicy.coerce(5) == RetryPolicy(attempts=5)
    assert RetryPolicy.coerce(None) is None
    policy = RetryPolicy(attempts=2)
    assert RetryPolicy.coerce(policy) is policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"base_delay": -1},
        {"base_delay": 2, "max_delay": 1},
        {"jitter": 1.5},
        {"deadline": 0},
        # NaN passes comparisons; a NaN or infinite wait fails in the sleep, not as a retry
        {"max_delay": float("nan")},
        {"base_delay": float("nan")},
        {"base_delay": float("inf"), "max_delay": float("inf")},
        {"max_delay": float("inf")},
        {"jitter": float("nan")},
        {"deadline": float("nan")},
        {"base_delay": "0.1"},
    ],
)
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [True, 2.5, "5"])
def test_retry_must_be_a_policy_a_count_or_none(retry: object) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy.coerce(retry)  # type: ignore[arg-type]


def test_the_state_allows_attempts_minus_one_retries_then_raises_exhausted() -> None:
    state = RetryState(RetryPolicy(attempts=3, jitter=0.0), random=lambda: 0.0)
    error = SerializationError("could not serialize", sqlstate="40001")
    assert state.next_delay(error) == pytest.approx(0.01)
    assert state.next_delay(error) == pytest.approx(0.02)
    with pytest.raises(RetryExhaustedError) as caught:
        state.next_delay(error)
    assert caught.value.attempts == 3
    assert caught.value.__cause__ is error


def test_the_deadline_stops_a_retry_that_could_not_start_in_time() -> None:
    now = [100.0]
    state = RetryState(
        RetryPolicy(attempts=50, base_delay=1.0, max_delay=1.0, jitter=0.0, deadline=2.5),
        clock=lambda: now[0],
    )
    error = DeadlockError("deadlock detected", sqlstate="40P01")
    assert state.next_delay(error) == 1.0
    now[0] += 1.6  # 1.6 s in, plus a 1 s wait, passes the 2.5 s deadline
    with pytest.raises(RetryExhaustedError) as caught:
        state.next_delay(error)
    assert caught.value.attempts == 2


@pytest.mark.parametrize(
    "error",
    [
        SerializationError("could not serialize access", sqlstate="40001"),
        DeadlockError("deadlock detected", sqlstate="40P01"),
        DatabaseBusyError("database is locked"),
        ConnectionLostError("terminating connection due to administrator command"),
        StatementTimeoutError(
            "canceling statement due to conflict with recovery", sqlstate="57014"
        ),
        StaleDataError("UPDATE statement on table 'counters' expected to update 1 row(s)"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_transient_failures_are_retryable(error: BaseException) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        UniqueViolationError("duplicate key", sqlstate="23505"),
        StatementTimeoutError("canceling statement due to statement timeout", sqlstate="57014"),
        ConnectionFailedError("password authentication failed"),
        DatabaseError("terminating connection due to conflict with recovery", sqlstate="57P04"),
        CommitOutcomeUnknownError("the connection broke during COMMIT"),
        ValueError("a bug"),
        asyncio.CancelledError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_failures_are_not_retryable(error: BaseException) -> None:
    assert not is_retryable(error)


def test_only_a_broken_connection_leaves_a_commit_in_doubt() -> None:
    assert breaks_commit(ConnectionLostError("server closed the connection unexpectedly"))
    assert not breaks_commit(SerializationError("could not serialize", sqlstate="40001"))
    assert not breaks_commit(DatabaseBusyError("database is locked"))
