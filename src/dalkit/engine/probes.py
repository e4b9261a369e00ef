"""The replica monitors' probes (the primary's position, each replica's replayed one) and their
time limit: a server that stops answering (a hung host, a stopped process) blocks a pooled
connection's read for good. The async monitor bounds each probe with ``asyncio.wait_for``; the
sync monitor runs each on a thread of its own (`ProbeThreads`), so that a hung primary or
replica neither stalls it nor keeps a replica admitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from dalkit.engine import autoroute, served_by

__all__ = [
    "PRIMARY_SAMPLE",
    "REPLAY_POSITION",
    "PRIMARY_PROBE",
    "ProbeThreads",
    "Replayed",
    "primary_position",
    "probe_error",
    "probe_timeout",
    "replay_position",
    "replayed",
]

# what the monitor samples of the primary: the WAL a replica can have (walsender sends what is
# flushed). Not the insert position: past a page or segment boundary (a WAL switch, an
# archive_timeout) it points after the next page's header, where an idle primary leaves it,
# and a caught-up replica's replayed position never reaches it: ejected as lagging for good.
# And, in the same round trip, the insert position (read-your-writes' own): it settles the
# read-your-writes positions lost before the sample (engine/ryw.py)
PRIMARY_SAMPLE = "SELECT pg_current_wal_flush_lsn()::text, (" + autoroute.PRIMARY_POSITION + ")"

# a promoted replica is no longer in recovery: its own position is what it has. And the age of
# the last transaction replayed (NULL before the first): what the replica misses is younger
REPLAY_POSITION = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END)::text, (CASE WHEN pg_is_in_recovery() THEN "
    "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) "
    "ELSE 0 END)::float8"
)

#: what a probe reads: the position replayed, and the age in seconds of the last transaction
#: replayed (None when unknown)
Replayed = tuple[str | None, float | None]
#: the `ProbeThreads` name of the primary's probe: no replica's (``host:port``) looks like it
PRIMARY_PROBE = "<primary>"

T = TypeVar("T")


def probe_timeout(interval_s: float) -> float:
    """How long the monitor waits for one probe: two of its intervals, at least a second.

    Args:
        interval_s: The monitor's interval.

    Returns:
        The limit, in seconds.
    """
    return max(1.0, 2 * interval_s)


def probe_error(error: BaseException) -> str:
    """What a failed probe raised, as the stats show it: its type and first line.

    Args:
        error: The probe's exception.

    Returns:
        ``"TypeName: first line"``.
    """
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def primary_position(engine: Engine) -> tuple[float, str, str]:
    """The primary's positions as the monitor samples them (`PRIMARY_SAMPLE`).

    Args:
        engine: The primary's engine.

    Returns:
        ``time.monotonic()`` before they were read, the flushed and the insert position as
        text.
    """
    started = time.monotonic()
    with engine.connect() as connection:
        result = connection.exec_driver_sql(PRIMARY_SAMPLE, execution_options=autoroute.PROBE)
        flushed, inserted = result.one()
        return started, str(flushed), str(inserted)


def replay_position(engine: Engine) -> tuple[str | None, float | None, str | None]:
    """The position ``engine``'s replica has replayed, read in autocommit (a standby refuses
    the READ WRITE BEGIN a read-only transaction's reset may leave psycopg asking for).

    Args:
        engine: The replica's engine.

    Returns:
        The position as text (None when the server does not know it), the age of the last
        transaction it replayed (see `Replayed`), and the ``host:port`` that answered (of a
        multi-host URL's hosts; None when not known: engine/served_by.py).
    """
    with served_by.probing(), engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        result = connection.exec_driver_sql(REPLAY_POSITION, execution_options=autoroute.PROBE)
        return (*replayed(result.one()), connection.info.get(served_by.SERVED_BY))


def replayed(row: Sequence[Any]) -> Replayed:
    """A probe's row as `Replayed`.

    Args:
        row: The row `REPLAY_POSITION` read.

    Returns:
        The position (text or None) and the age (float or None).
    """
    position, age = row
    return position, None if age is None else float(age)


class ProbeThreads:
    """Runs each probe (the primary's, each replica's) on a daemon thread and waits for it a
    limited time. A probe that overruns is left to end when its server answers again; until
    then its server gets no other, and each round finds it still running (a timeout again)."""

    def __init__(self) -> None:
        self._running: dict[str, Future[Any]] = {}

    def run(self, name: str, probe: Callable[[], T], timeout: float) -> T:
        """``probe()``'s value, waited for at most ``timeout`` seconds.

        Args:
            name: The replica's name (`PRIMARY_PROBE` for the primary): one probe at a time
                for each.
            probe: What reads its position.
            timeout: Seconds to wait.

        Returns:
            What ``probe()`` returned.

        Raises:
            TimeoutError: It did not end in time (or an earlier one still runs).
        """
        future: Future[T] | None = self._running.get(name)
        if future is None or future.done():
            future = self._running[name] = Future()
            threading.Thread(
                target=_settle, args=(future, probe), name="dalkit-replica-probe", daemon=True
            ).start()
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer within {timeout:g}s") from None


def _settle(future: Future[T], probe: Callable[[], T]) -> None:
    try:
        future.set_result(probe())
    except BaseException as error:  # handed to the monitor, which waits for it
        future.set_exception(error)
