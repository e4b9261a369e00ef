"""Read replicas without I/O: each replica's health and lag, which node serves a read, and the
read-your-writes position (a WAL LSN) of the current context. The routers own the I/O.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dalkit.engine.lag import PrimarySamples
from dalkit.engine.lsn import format_lsn, parse_lsn, token_position
from dalkit.engine.ryw import LOST_TOKEN, LatestPrimaryRead, Position, inside, with_write
from dalkit.errors import ConfigurationError

__all__ = ["Replica", "ReplicaSet", "format_lsn", "parse_lsn", "token_position"]

log = logging.getLogger("dalkit.replicas")

E = TypeVar("E")
_ids = itertools.count()


@dataclass(eq=False)
class Replica(Generic[E]):
    """One replica as the router sees it.

    Attributes:
        name: ``host:port``, never the URL (it would carry the password).
        engine: A sync or async SQLAlchemy engine.
        weight: Its share of the reads (smooth weighted round robin).
        state: ``unknown`` (not probed yet), ``healthy``, ``lagging`` or ``down``.
        lag_s: Seconds behind the primary at the last probe, None before one (or when it
            could not be bounded: lagging).
        reads: Transactions routed to it.
        errors: Failed probes and reads that lost their connection.
        host: ``host:port`` that answered the last probe (of a multi-host URL's hosts).
    """

    name: str
    engine: E
    weight: int = 1
    state: str = "unknown"  # unknown (not probed yet: no reads), healthy, lagging, down
    replay_lsn: int = 0
    lag_s: float | None = None
    reads: int = 0
    ejections: int = 0
    errors: int = 0  # failed probes and reads that lost their connection
    error: str | None = None
    host: str | None = None  # what the position and lag are of: engine/served_by.py
    _current: int = 0  # smooth weighted round robin (nginx's): no bursts on one node

    @property
    def admitted(self) -> bool:
        """Whether it may get reads: probed, and found within the lag limit (weighted 0, it is
        drained and gets none all the same)."""
        return self.state == "healthy"


@dataclass
class _Counters:
    primary_reads: int = 0  # read-only (or plain-read) transactions the primary served
    read_your_writes: int = 0  # ... because no admitted replica had replayed the last write
    all_ejected: int = 0  # ... because every replica was ejected
    unprobed: int = 0  # ... because no replica was probed yet (the monitor's first round)
    rerouted: int = 0  # reads run again elsewhere after their replica failed
    writes_tracked: int = 0
    positions_lost: int = 0  # ... of which the primary's position could not be read after
    default_routed: int = 0  # default transactions whose plain reads went to a replica


class ReplicaSet(Generic[E]):
    """The replicas of one database, the choice among them, and the read-your-writes position.

    Args:
        replicas: ``(name, engine, weight)`` of each replica.
        max_lag_s: A replica further behind than this is ejected until it catches up.
        interval_s: How often the monitor probes (kept here for the routers).

    Raises:
        ConfigurationError: No replica, a limit that is not positive, or a weight that is not
            an integer >= 0.
    """

    def __init__(
        self,
        replicas: Sequence[tuple[str, E, int]],
        *,
        max_lag_s: float,
        interval_s: float,
    ) -> None:
        if not replicas:
            raise ConfigurationError("replicas= needs at least one URL")
        if max_lag_s <= 0 or interval_s <= 0:
            raise ConfigurationError("max_replica_lag_s and replica_monitor_interval_s must be > 0")
        for name, _, weight in replicas:
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise ConfigurationError(f"replica weight of {name} must be an integer >= 0")
        self.replicas = [Replica(name, engine, weight) for name, engine, weight in replicas]
        self.max_lag_s = max_lag_s
        self.interval_s = interval_s
        # one variable per database: a position on one server means nothing on another. Its
        # value is mutable and shared by the contexts copied from the one that set it (a sync
        # endpoint's worker thread, a task): a write committed there is this context's too
        self._required: contextvars.ContextVar[Position | None] = contextvars.ContextVar(
            f"dalkit_replica_lsn_{next(_ids)}", default=None
        )
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._samples = PrimarySamples()
        self._primary_read = LatestPrimaryRead()  # settles lost positions (engine/ryw.py)
        self._warned = False

    # -- read-your-writes ---------------------------------------------------------------------
    def wrote(self, lsn: int, started: float | None = None) -> None:
        """Record a write committed at ``lsn`` in this context: later reads must see it.

        Args:
            lsn: The primary's WAL insert position after the commit.
            started: ``time.monotonic()`` before it was read (settles the positions lost before).
        """
        with self._lock:  # a shared position may be changed from several threads
            if started is not None:
                self._primary_read.add(started, lsn)
            self._record(lsn)
            self._counters.writes_tracked += 1

    def position_lost(self) -> None:
        """Record a write committed in this context whose position could not be read: its
        reads go to the primary until a later read of the primary's position settles it."""
        lost = time.monotonic()
        with self._lock:
            self._record(0, lost)
            self._counters.writes_tracked += 1
            self._counters.positions_lost += 1

    def primary_read(self, started: float, lsn: int) -> None:
        """Record the primary's insert position, read (by the monitor) after ``started``: it
        settles the positions lost before then, as `wrote()` does."""
        with self._lock:
            self._primary_read.add(started, lsn)

    def _record(self, lsn: int, lost: float | None = None) -> None:
        changed = with_write(self._required.get(), lsn, lost)
        if changed is not None:
            self._required.set(changed)

    def _settled(self) -> Position | None:
        position = self._required.get()
        if position is not None and (position.lost is not None or position.own_lost is not None):
            with self._lock:
                position.resolve(self._primary_read)
        return position

    def token(self) -> str | None:
        """This context's read-your-writes position as text, or None if it wrote nothing;
        `LOST_TOKEN` while a position it must read past is not known (see dalkit.engine.ryw)."""
        position = self._settled()
        if position is not None and position.lost is not None:
            return LOST_TOKEN
        return format_lsn(position.required) if position and position.required else None

    def require(self, token: str | None) -> contextvars.Token[Position | None]:
        """Make this context's reads wait for ``token`` too (the later of the two positions).

        Args:
            token: A position from `token()`, maybe of
                another process; None or empty adds nothing.

        Returns:
            What `release()` takes to undo it.

        Raises:
            ConfigurationError: ``token`` is not a WAL position.
        """
        lsn = token_position(token)
        return self._required.set(inside(self._required.get(), lsn, time.monotonic()))

    def release(self, token: contextvars.Token[Position | None]) -> None:
        """Undo a `require()`: its position no longer binds reads, but the writes committed
        inside the block still do (and are still in `token()`)."""
        inner = self._settled()
        self._required.reset(token)
        if inner is None or not (inner.own or inner.own_lost is not None):
            return
        with self._lock:
            self._record(inner.own, inner.own_lost)

    # -- routing ------------------------------------------------------------------------------
    def choose(self) -> Replica[E] | None:
        """The replica for the next read of this context, counted as routed there.

        Returns:
            An admitted replica that has replayed this context's last write, or None for the
            primary (counted, with the reason, in the stats).
        """
        position = self._settled()
        required = 0 if position is None else position.required
        lost = position is not None and position.lost is not None
        with self._lock:
            weighted = [r for r in self.replicas if r.weight > 0]  # weight 0: drained, no reads
            admitted = [r for r in weighted if r.admitted]
            if not admitted:
                self._counters.primary_reads += 1
                if not weighted:
                    return None  # drained on purpose: no replica is ejected, and no warning
                if any(r.state == "unknown" for r in weighted):
                    self._counters.unprobed += 1  # not known to be fit yet: no warning
                    return None
                self._counters.all_ejected += 1
                if not self._warned:
                    self._warned = True
                    log.warning("every replica is ejected: reads go to the primary")
                return None
            self._warned = False
            fresh = [r for r in admitted if r.replay_lsn >= required] if required else admitted
            if lost:  # a commit of this context whose position is not known: the primary
                fresh = []
            if not fresh:
                self._counters.primary_reads += 1
                self._counters.read_your_writes += 1
                return None
            best = fresh[0]
            for replica in fresh:
                replica._current += replica.weight
                if replica._current > best._current:
                    best = replica
            best._current -= sum(r.weight for r in fresh)
            best.reads += 1
            return best

    def routed_default(self) -> None:
        """Count a default transaction whose plain reads went to the replica `choose()` gave."""
        with self._lock:
            self._counters.default_routed += 1

    def mark_down(self, replica: Replica[E], error: BaseException | str) -> None:
        """Eject ``replica`` as down until the monitor sees it again: a read lost its connection.

        Args:
            replica: The replica the read ran on.
            error: What the read raised (kept, as text, in the stats).
        """
        with self._lock:
            replica.errors += 1
            self._eject(replica, "down", str(error))
            self._counters.rerouted += 1

    # -- the monitor's findings ---------------------------------------------------------------
    def primary_at(self, now: float, lsn: int) -> None:
        """Record the primary's WAL position when the monitor looked: lag is measured by it.

        Args:
            now: ``time.monotonic()`` when it was read.
            lsn: The primary's WAL insert position.
        """
        self._samples.add(now, lsn)

    def primary_unseen(self) -> None:
        """The monitor (re)starts, or could not read the primary's position: what the
        primary wrote until the next sample may be older than that sample."""
        self._samples.lost()

    def observed(
        self,
        replica: Replica[E],
        now: float,
        replay_lsn: int,
        replay_age_s: float | None = None,
        host: str | None = None,
    ) -> None:
        """Record a successful probe of ``replica``, ejecting or re-admitting it.

        Lag is the age of the oldest primary position the replica has not replayed, so it
        needs no clock on the replica. Behind every position sampled (a process that started
        while the replica lagged) or behind one sampled after the monitor lost sight of the
        primary (a fork, a failed probe), the samples only say it is at least that old: the
        age of the last transaction the replica replayed bounds it from above (what it misses
        came later). Without a bound the replica counts as lagging.

        Args:
            replica: The replica probed.
            now: ``time.monotonic()`` when it was probed.
            replay_lsn: The position it has replayed.
            replay_age_s: Seconds since the last transaction it replayed was committed, None
                when unknown.
            host: ``host:port`` of the connection probed (None when unknown).
        """
        lag = self._samples.lag(now, replay_lsn, replay_age_s)
        with self._lock:
            # as probed, even when lower: one server only moves forward, so a lower position
            # is another server answering for the name (the next host of a multi-host URL),
            # whose reads must not be taken for the one that had replayed further
            replica.replay_lsn = replay_lsn or replica.replay_lsn
            replica.host = host
            replica.lag_s = lag
            replica.error = None
            if lag is None:
                self._eject(replica, "lagging", "replay lag unknown: behind every sample")
            elif lag > self.max_lag_s:
                self._eject(replica, "lagging", f"replay lag {lag:.3f}s")
            elif replica.state != "healthy":
                if replica.state in ("lagging", "down"):
                    log.info("replica %s re-admitted (lag %.3fs)", replica.name, lag)
                replica.state = "healthy"
        self._trim()

    def failed(self, replica: Replica[E], error: BaseException | str) -> None:
        """Eject ``replica`` as down: a probe failed.

        Args:
            replica: The replica probed.
            error: What the probe raised (kept, as text, in the stats).
        """
        with self._lock:
            replica.errors += 1
            self._eject(replica, "down", str(error))

    def forget(self) -> None:
        """Start over, the monitor stopped: every replica unknown until probed again."""
        with self._lock:
            self._samples.lost()
            for replica in self.replicas:
                replica.state = "unknown"

    def forked(self) -> None:
        """Start over in a forked child, with a lock of its own: the parent's monitor may have
        held this one."""
        self._lock = threading.Lock()
        self.forget()

    def _eject(self, replica: Replica[E], state: str, reason: str) -> None:
        if replica.state != state:
            if replica.admitted:
                replica.ejections += 1
            log.warning("replica %s ejected: %s", replica.name, reason)
        replica.state = state
        replica.error = reason if state == "down" else None

    def _trim(self) -> None:
        self._samples.trim(min(r.replay_lsn for r in self.replicas))

    # -- stats --------------------------------------------------------------------------------
    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """The counters and each replica's state: ``db.get_stats()["replicas"]``.

        Args:
            reset: Start the counters (and each replica's ``reads``, ``errors`` and
                ``ejections``) over after reading them.

        Returns:
            ``primary_reads``, ``read_your_writes_on_primary``, ``all_ejected_on_primary``,
            ``unprobed_on_primary``, ``rerouted_reads``, ``writes_tracked``, ``positions_lost``
            (not read after a commit: dalkit.engine.ryw), ``default_transactions_routed``, and
            ``replicas``: by name, a dict of ``name`` (``host:port``), ``state``, ``admitted``,
            ``weight``, ``drained`` (weighted 0: no reads, admitted or not), ``lag_s`` (float
            or None), ``reads``, ``errors``, ``ejections``, ``replay_lsn`` and
            ``error`` (the last failure, or None). See docs/replicas.md.
        """
        with self._lock:
            counters = self._counters
            stats: dict[str, Any] = {
                "primary_reads": counters.primary_reads,
                "read_your_writes_on_primary": counters.read_your_writes,
                "all_ejected_on_primary": counters.all_ejected,
                "unprobed_on_primary": counters.unprobed,
                "rerouted_reads": counters.rerouted,
                "writes_tracked": counters.writes_tracked,
                "positions_lost": counters.positions_lost,
                "default_transactions_routed": counters.default_routed,
                "replicas": {
                    r.name: {
                        "name": r.name,
                        "state": r.state,
                        "admitted": r.admitted,
                        "weight": r.weight,
                        "drained": r.weight == 0,
                        "lag_s": r.lag_s,
                        "reads": r.reads,
                        "errors": r.errors,
                        "ejections": r.ejections,
                        "replay_lsn": format_lsn(r.replay_lsn),
                        "error": r.error,
                    }
                    for r in self.replicas
                },
            }
            if reset:
                self._counters = _Counters()
                for replica in self.replicas:
                    replica.reads = 0
                    replica.ejections = 0
                    replica.errors = 0
            return stats
