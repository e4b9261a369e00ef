"""Retry policy for transactions: which failures may be retried, and how long to wait between
attempts. No I/O: the sync and async transaction runners own the loop and the sleeping.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable

import sqlalchemy.exc
from sqlalchemy.orm.exc import StaleDataError

from dalkit.driver_errors import translate_dbapi_error
from dalkit.errors import (
    ConfigurationError,
    ConnectionLostError,
    DatabaseError,
    RetryExhaustedError,
    TransactionAbortedError,
    TransientError,
)

__all__ = [
    "backoff_delay",
    "breaks_commit",
    "is_retryable",
    "DEFAULT_RETRY",
    "RetryPolicy",
    "RetryState",
]

# SQLSTATE 57P04 (database dropped) also says "conflict with recovery", but nothing can fix it
_DATABASE_DROPPED = "57P04"
# past this, doubling the delay only overflows: max_delay has long since capped it
_MAX_DOUBLINGS = 62


def backoff_delay(
    attempt: int, base_delay: float, max_delay: float, jitter: float, random_fraction: float
) -> float:
    """The one backoff formula, for transaction retries and the outbox relay alike: the delay
    before retry ``attempt`` (1 for the first) doubles from ``base_delay`` up to ``max_delay``,
    and a ``jitter`` fraction of it is random (``random_fraction`` uniform in [0, 1))."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    ceiling = min(max_delay, base_delay * 2.0**doublings)
    return ceiling * (1.0 - jitter * random_fraction)


def check_backoff(owner: str, base_delay: float, max_delay: float, jitter: float) -> None:
    """Refuse what `backoff_delay()` cannot make a wait of: NaN passes every comparison, and a
    wait of NaN or infinity seconds makes the sleep (or the retry time) fail instead.

    Args:
        owner: The class whose fields these are, for the error.
        base_delay: Seconds before the first retry.
        max_delay: The longest wait.
        jitter: The random fraction of each wait.

    Raises:
        ConfigurationError: A value that is no finite number, ``base_delay`` below 0 or above
            ``max_delay``, or ``jitter`` outside [0, 1].
    """
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay), ("jitter", jitter)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{owner}.{name} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise ConfigurationError(f"{owner}.{name} must be finite, not {value!r}")
    if base_delay < 0 or max_delay < base_delay:
        raise ConfigurationError(f"{owner} needs 0 <= base_delay <= max_delay")
    if not 0.0 <= jitter <= 1.0:
        raise ConfigurationError(f"{owner}.jitter is a fraction between 0 and 1")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a transaction is run again after a retryable failure.

    ``attempts`` counts every run, the first included. The wait before retry *n* is
    ``min(max_delay, base_delay * 2 ** (n - 1))``, of which a ``jitter`` fraction is random
    (1.0, the default, waits anywhere up to it: "full jitter", which spreads out workers that
    failed together). ``deadline`` (seconds from the first attempt) stops retrying when the
    next attempt could not start in time.

    Attributes:
        attempts: Every run counted, the first included (at least 1).
        base_delay: Seconds before the first retry, doubled for each next one.
        max_delay: The longest wait between two runs, in seconds.
        jitter: The random fraction of each wait (0: none, 1: full jitter).
        deadline: Seconds from the first attempt after which no retry starts (``None``: none).

    Raises:
        ConfigurationError: When a field is out of range.

    Examples:
        ```python
        @db.transactional(retry=RetryPolicy(attempts=10, max_delay=0.5, deadline=5.0))
        def transfer(session: Session, source: int, target: int, amount: int) -> None: ...
        ```
    """

    attempts: int = 5
    base_delay: float = 0.01
    max_delay: float = 1.0
    jitter: float = 1.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigurationError("RetryPolicy.attempts must be an integer")
        if self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts counts the first run: at least 1")
        check_backoff("RetryPolicy", self.base_delay, self.max_delay, self.jitter)
        deadline = self.deadline
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float)
        ):
            raise ConfigurationError(f"RetryPolicy.deadline must be a number, not {deadline!r}")
        if deadline is not None and math.isnan(deadline):
            raise ConfigurationError(f"RetryPolicy.deadline must be finite, not {deadline!r}")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigurationError("RetryPolicy.deadline must be positive, or None")

    @classmethod
    def coerce(cls, retry: RetryPolicy | int | None) -> RetryPolicy | None:
        """``retry=5`` means ``RetryPolicy(attempts=5)``; ``None`` means run once, no retry.

        Args:
            retry: A policy, a number of attempts, or ``None``.

        Returns:
            The policy, or ``None`` for no retry.

        Raises:
            ConfigurationError: For anything else (a bool included).
        """
        if retry is None or type(retry) is RetryPolicy:
            return retry
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise ConfigurationError(
                f"retry must be a RetryPolicy, a number of attempts or None, not {retry!r}"
            )
        return cls(attempts=retry)

    def delay(self, retry_number: int, random_fraction: float) -> float:
        """Seconds to wait before a retry.

        Args:
            retry_number: 1 for the first retry, 2 for the second, ...
            random_fraction: A uniform random number in [0, 1), scaled by ``jitter``.

        Returns:
            The wait in seconds, at most ``max_delay``.
        """
        return backoff_delay(
            retry_number, self.base_delay, self.max_delay, self.jitter, random_fraction
        )


DEFAULT_RETRY = RetryPolicy()


class RetryState:
    """The attempts of one transaction so far: counts them and decides each wait.

    ``started`` is when the first attempt began, on ``clock`` (the runner's perf_counter);
    ``clock`` and ``random`` are injectable so tests can drive deadlines and jitter.
    """

    __slots__ = ("_clock", "_random", "_started", "attempt", "policy")

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.attempt = 1
        self._clock = clock
        self._random = random
        self._started = clock() if started is None else started

    def next_delay(self, error: BaseException) -> float:
        """After attempt ``self.attempt`` failed with retryable ``error``: the wait before the
        next one, or RetryExhaustedError (caused by ``error``) when the policy allows no more."""
        policy = self.policy
        if self.attempt >= policy.attempts:
            raise RetryExhaustedError(self.attempt, error) from error
        delay = policy.delay(self.attempt, self._random())
        if policy.deadline is not None and self._clock() - self._started + delay > policy.deadline:
            raise RetryExhaustedError(self.attempt, error) from error
        self.attempt += 1
        return delay


def is_retryable(error: BaseException) -> bool:
    """Whether running the whole transaction again may succeed where this attempt failed.

    Yes for serialization failures and deadlocks (SQLSTATE 40001, 40P01), PostgreSQL recovery
    conflicts, SQLite busy and locked errors, a connection lost before COMMIT and an ORM
    version-counter conflict (StaleDataError, the optimistic-locking twin of 40001). Never for
    cancellation or any other error; whether COMMIT itself broke is the runner's to know. A
    TransactionAbortedError is as retryable as the failed flush it comes from.
    """
    if isinstance(error, TransactionAbortedError) and error.__cause__ is not None:
        error = error.__cause__  # the flush's failure decides: the rest only followed from it
    if isinstance(error, sqlalchemy.exc.DBAPIError) and not isinstance(error, DatabaseError):
        error = translate_dbapi_error(error, is_disconnect=error.connection_invalidated)
    if isinstance(error, TransientError | ConnectionLostError | StaleDataError):
        return True
    return (
        isinstance(error, DatabaseError)
        and error.sqlstate != _DATABASE_DROPPED
        and "conflict with recovery" in str(error)
    )


def breaks_commit(error: BaseException) -> bool:
    """Whether ``error``, raised by COMMIT, leaves its outcome unknown: the connection broke,
    so the server may have committed before the answer was lost."""
    if isinstance(error, ConnectionLostError):
        return True
    return isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated
