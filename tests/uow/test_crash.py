"""Crash test on PostgreSQL: three relay processes, SIGKILLed at random (each time once they
sent something since the last kill) and restarted while 5,000 events flow; afterwards no event
is lost, the inbox absorbed every duplicate, and each aggregate's events were handled in order.
It waits for progress, never for a time: only a stall fails it."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dalkit import Database, UnitOfWork
from dalkit.outbox.relay import read_status

from .conftest import with_driver
from .models import AccountCredited
from .relay_worker import crash_metadata, deliveries, handled

AGGREGATES = 50
EVENTS_PER_AGGREGATE = 100
EVENTS_PER_UNIT = 10
RELAYS = 3
ROOT = Path(__file__).resolve().parents[2]
DRAIN_KILLS = 12
# the one deadline: this long with messages pending and none sent means the relays are stuck.
# Nothing else waits for a time: a loaded machine makes the test slower, never failing
STALL_S = 60.0


class Relays:
    """The relay processes, forked by the zygote of ``relay_worker`` (a process started once),
    so that a restarted relay is at work at once instead of importing dalkit first."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.zygote = subprocess.Popen(
            [sys.executable, "-m", "tests.uow.relay_worker"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.pids: list[int] = []

    def start(self) -> int:
        """Fork another relay; its pid."""
        assert self.zygote.stdin is not None
        assert self.zygote.stdout is not None
        self.zygote.stdin.write(self.url + "\n")
        self.zygote.stdin.flush()
        line = self.zygote.stdout.readline()
        assert line, f"the relay zygote exited with code {self.zygote.wait()}"
        return int(line)

    def close(self) -> None:
        """Stop every relay (SIGTERM, as a deployment would), then the zygote."""
        try:
            for pid in self.pids:
                with contextlib.suppress(ProcessLookupError):  # one that died already
                    os.kill(pid, signal.SIGTERM)
            for pid in self.pids:
                self.wait_gone(pid)
        finally:
            assert self.zygote.stdin is not None
            self.zygote.stdin.close()
            try:
                self.zygote.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.zygote.kill()
                self.zygote.wait()
            assert self.zygote.stdout is not None
            self.zygote.stdout.close()

    def wait_gone(self, pid: int) -> None:
        """Wait until relay ``pid`` is gone, killing it after 30 s (as ``Popen.wait`` was
        given)."""
        gone_by = time.monotonic() + 30
        while self._is_relay(pid):
            if time.monotonic() > gone_by:
                os.kill(pid, signal.SIGKILL)
                gone_by = float("inf")
            time.sleep(0.01)

    def _is_relay(self, pid: int) -> bool:
        # the zygote has the kernel reap its relays (SIGCHLD ignored), so a dead relay's pid is
        # gone at once; the parent's pid is checked all the same, so that a pid reused by
        # another process is never waited for, nor killed
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            # ProcessLookupError: the file opened while the relay lived, and it was reaped
            # before the read (ESRCH; seen once in a CI run)
            return False
        state, parent = stat.rpartition(")")[2].split()[:2]
        return state != "Z" and int(parent) == self.zygote.pid


class Producer:
    """Writes the events in units of work of ten, each aggregate's in increasing ``amount``
    order; units of different aggregates are interleaved at random."""

    def __init__(self, db: Database, rng: random.Random) -> None:
        self.db = db
        self.rng = rng
        self.next_seq = dict.fromkeys(range(AGGREGATES), 0)
        self.event_ids: list[str] = []

    @property
    def done(self) -> bool:
        return not self.next_seq

    def write(self, units: int) -> None:
        for _ in range(units):
            if self.done:
                return
            aggregate = self.rng.choice(list(self.next_seq))
            start = self.next_seq[aggregate]
            with UnitOfWork(self.db, outbox=True) as uow:
                for seq in range(start, start + EVENTS_PER_UNIT):
                    event = AccountCredited(account_id=aggregate, amount=seq)
                    uow.publish(event, aggregate=("Account", aggregate))
                    self.event_ids.append(event.event_id)
            self.next_seq[aggregate] = start + EVENTS_PER_UNIT
            if self.next_seq[aggregate] >= EVENTS_PER_AGGREGATE:
                del self.next_seq[aggregate]


# no_cover: the relays it SIGKILLs never write their coverage data, yet each started coverage
# and ran under its tracer; what they and the producer run, tests/uow's in-process relay,
# inbox and outbox tests run too
@pytest.mark.postgres
@pytest.mark.no_cover
def test_relays_killed_at_random_lose_nothing_and_keep_each_aggregates_order(
    postgres_database_url: str,
) -> None:
    url = with_driver(postgres_database_url, "postgresql+psycopg")
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db = Database(url)
    db.create_all(crash_metadata)
    relays = Relays(url)
    kills = 0
    try:
        relays.pids = [relays.start() for _ in range(RELAYS)]
        # the producer writes in slices; between slices, a random relay may be killed, once the
        # relays sent something since the last kill: a kill lands on relays at work, not on
        # ones still starting (which take longer than the pause on a loaded machine)
        producer = Producer(db, random.Random(rng.random()))
        sent = 0
        next_kill = time.monotonic() + rng.uniform(0.2, 0.8)
        while not producer.done:
            producer.write(5)
            if time.monotonic() >= next_kill and read_status(db).sent > sent:
                sent = read_status(db).sent
                kills += kill_one(relays, rng)
                next_kill = time.monotonic() + rng.uniform(0.2, 0.8)
        # then keep killing while the relays work through the backlog, each time after they
        # made progress
        for _ in range(DRAIN_KILLS):
            sent = sent_more_than(db, sent, seed)
            if not read_status(db).pending:
                break
            time.sleep(rng.uniform(0.3, 0.8))
            kills += kill_one(relays, rng)
        # and let the last ones finish undisturbed, for as long as they make progress
        while read_status(db).pending:
            sent = sent_more_than(db, sent, seed)
    finally:
        relays.close()

    with db.session() as session:
        delivered = session.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar()
        runs = session.execute(
            sa.select(handled.c.event_id, handled.c.aggregate_key, handled.c.seq).order_by(
                handled.c.id
            )
        ).all()
    db.dispose()

    event_ids = producer.event_ids
    handled_ids = [row.event_id for row in runs]
    assert len(event_ids) == AGGREGATES * EVENTS_PER_AGGREGATE
    assert set(handled_ids) == set(event_ids), f"events lost (seed {seed})"
    assert len(handled_ids) == len(set(handled_ids)), f"a handler ran twice (seed {seed})"
    by_aggregate: dict[str, list[int]] = {}
    for row in runs:
        by_aggregate.setdefault(row.aggregate_key, []).append(row.seq)
    for key, seqs in by_aggregate.items():
        assert seqs == sorted(seqs), f"{key} handled out of order (seed {seed})"
    duplicates = int(delivered or 0) - len(event_ids)
    assert kills >= 3
    print(
        f"\ncrash test (seed {seed}): {len(event_ids)} events, {kills} relays killed, "
        f"0 lost, {duplicates} duplicate deliveries absorbed by the inbox"
    )


def sent_more_than(db: Database, sent: int, seed: int) -> int:
    """Wait until the relays sent more than ``sent`` messages, or none is pending.

    Returns:
        How many messages are sent now.
    """
    stalled_at = time.monotonic() + STALL_S
    while True:
        status = read_status(db)
        if status.sent > sent or not status.pending:
            return status.sent
        assert time.monotonic() < stalled_at, (
            f"outbox not drained: {status.pending} pending, none sent for {STALL_S} s (seed {seed})"
        )
        time.sleep(0.05)


def kill_one(relays: Relays, rng: random.Random) -> int:
    """SIGKILL a random relay and start another in its place."""
    index = rng.randrange(len(relays.pids))
    os.kill(relays.pids[index], signal.SIGKILL)
    relays.wait_gone(relays.pids[index])
    relays.pids[index] = relays.start()
    return 1
