"""Read replicas without I/O: each replica's health and lag, which node serves a read, and the
read-your-writes position (a WAL LSN) of the current context. The routers own the I/O.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dalkit.errors import ConfigurationError

__all__ = ["Replica", "ReplicaSet", "format_lsn", "parse_lsn"]

log = logging.getLogger("dalkit.replicas")

E = TypeVar("E")
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_SAMPLES_KEPT = 10_000
_ids = itertools.count()


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` as one integer; a malformed token is a ConfigurationError."""
    match = _LSN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"not a replica token (a WAL position such as 0/16B3748): {text!r}"
        )
    return (int(match[1], 16) << 32) + int(match[2], 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(eq=False)
class Replica(Generic[E]):
    """One replica as the router sees it; ``engine`` is a sync or async SQLAlchemy engine."""

    name: str
    engine: E
    weight: int = 1
    state: str = "unknown"  # unknown (not probed yet), healthy, lagging, down
    replay_lsn: int = 0
    lag_s: float | None = None
    reads: int = 0
    ejections: int = 0
    error: str | None = None
    _current: int = 0  # smooth weighted round robin (nginx's): no bursts on one node

    @property
    def admitted(self) -> bool:
        return self.state in ("unknown", "healthy")


@dataclass
class _Counters:
    primary_reads: int = 0  # read-only transactions the primary served
    read_your_writes: int = 0  # ... because no admitted replica had replayed the last write
    all_ejected: int = 0  # ... because every replica was ejected
    rerouted: int = 0  # reads run again elsewhere after their replica failed
    writes_tracked: int = 0


class ReplicaSet(Generic[E]):
    """The replicas of one database, the choice among them, and the read-your-writes position."""

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
        # one variable per database: a position on one server means nothing on another
        self._required: contextvars.ContextVar[int] = contextvars.ContextVar(
            f"dalkit_replica_lsn_{next(_ids)}", default=0
        )
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._samples: deque[tuple[float, int]] = deque(maxlen=_SAMPLES_KEPT)
        self._warned = False

    # -- read-your-writes ---------------------------------------------------------------------
    def wrote(self, lsn: int) -> None:
        """A write committed at ``lsn`` in this context: later reads must see it."""
        if lsn > self._required.get():
            self._required.set(lsn)
        self._counters.writes_tracked += 1

    def token(self) -> str | None:
        required = self._required.get()
        return format_lsn(required) if required else None

    def require(self, token: str | None) -> contextvars.Token[int]:
        """Make this context's reads wait for ``token`` too (the later of the two positions)."""
        lsn = 0 if token is None or token == "" else parse_lsn(token)
        return self._required.set(max(lsn, self._required.get()))

    def release(self, token: contextvars.Token[int]) -> None:
        self._required.reset(token)

    # -- routing ------------------------------------------------------------------------------
    def choose(self) -> Replica[E] | None:
        """The replica for the next read of this context, or None for the primary."""
        required = self._required.get()
        with self._lock:
            admitted = [r for r in self.replicas if r.admitted and r.weight > 0]
            if not admitted:
                self._counters.primary_reads += 1
                self._counters.all_ejected += 1
                if not self._warned:
                    self._warned = True
                    log.warning("every replica is ejected: reads go to the primary")
                return None
            self._warned = False
            fresh = [r for r in admitted if r.replay_lsn >= required] if required else admitted
            if not fresh:
                self._counters.primary_reads += 1
                self._counters.read_your_writes += 1
                return None
            total = 0
            best = fresh[0]
            for replica in fresh:
                replica._current += replica.weight
                total += replica.weight
                if replica._current > best._current:
                    best = replica
            best._current -= total
            best.reads += 1
            return best

    def mark_down(self, replica: Replica[E], error: BaseException | str) -> None:
        """A read on ``replica`` lost its connection: eject it until the monitor sees it again."""
        with self._lock:
            self._eject(replica, "down", str(error))
            self._counters.rerouted += 1

    # -- the monitor's findings ---------------------------------------------------------------
    def primary_at(self, now: float, lsn: int) -> None:
        """The primary's WAL position when the monitor looked: the clock lag is measured by."""
        if not self._samples or lsn > self._samples[-1][1]:
            self._samples.append((now, lsn))

    def observed(self, replica: Replica[E], now: float, replay_lsn: int) -> None:
        """A successful probe: ``replay_lsn`` replayed. Lag is the age of the oldest primary
        position the replica has not replayed, so it needs no clock on the replica."""
        lag = 0.0
        for seen_at, lsn in self._samples:
            if lsn > replay_lsn:
                lag = max(0.0, now - seen_at)
                break
        with self._lock:
            replica.replay_lsn = max(replica.replay_lsn, replay_lsn)
            replica.lag_s = lag
            replica.error = None
            if lag > self.max_lag_s:
                self._eject(replica, "lagging", f"replay lag {lag:.3f}s")
            elif replica.state != "healthy":
                if replica.state in ("lagging", "down"):
                    log.info("replica %s re-admitted (lag %.3fs)", replica.name, lag)
                replica.state = "healthy"
        self._trim()

    def failed(self, replica: Replica[E], error: BaseException | str) -> None:
        with self._lock:
            self._eject(replica, "down", str(error))

    def _eject(self, replica: Replica[E], state: str, reason: str) -> None:
        if replica.state != state:
            if replica.admitted:
                replica.ejections += 1
            log.warning("replica %s ejected: %s", replica.name, reason)
        replica.state = state
        replica.error = reason if state == "down" else None

    def _trim(self) -> None:
        floor = min(r.replay_lsn for r in self.replicas)
        while len(self._samples) > 1 and self._samples[0][1] <= floor:
            self._samples.popleft()

    # -- stats --------------------------------------------------------------------------------
    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            counters = self._counters
            stats: dict[str, Any] = {
                "primary_reads": counters.primary_reads,
                "read_your_writes_on_primary": counters.read_your_writes,
                "all_ejected_on_primary": counters.all_ejected,
                "rerouted_reads": counters.rerouted,
                "writes_tracked": counters.writes_tracked,
                "replicas": {
                    r.name: {
                        "state": r.state,
                        "lag_s": r.lag_s,
                        "reads": r.reads,
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
            return stats
