"""A replica URL naming two hosts (libpq-style failover between replicas): when the first goes
down and the second, further behind, answers for the name, read-your-writes still holds."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dalkit import Database
from dalkit.testing.replication import ReplicaServer, Replication, current_lsn

from .helpers import hosts_url, items, metadata


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _wait_for_probe(db: Database, seen: Callable[[int], bool], timeout: float = 30.0) -> None:
    """Until the monitor has probed a replay position ``seen`` accepts (polled, not slept:
    a loaded machine may take several of its rounds to get there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (replica,) = db.get_stats()["replicas"]["replicas"].values()
        if replica["replay_lsn"] is not None and seen(_lsn(replica["replay_lsn"])):
            return
        time.sleep(0.05)
    raise AssertionError(f"the monitor did not probe the expected position within {timeout}s")


@pytest.mark.slow
def test_a_read_after_a_write_stays_fresh_when_the_next_host_answers_for_the_replica(
    replicated_database: tuple[str, str],
    replication: Replication,
    second_replica: ReplicaServer,
) -> None:
    # the router kept the highest position ever probed for the name: the first host's, while
    # the second one, which had not replayed the write, served the reads that followed it
    primary, first = replicated_database
    second = second_replica.url_for(make_url(first).database or "")
    second_replica.wait_for(current_lsn(replication.primary.url))
    db = Database(
        primary.replace("postgresql://", "postgresql+psycopg://"),
        replicas=[hosts_url(first, second)],
        max_replica_lag_s=3600,
        replica_monitor_interval_s=0.2,
    )

    def read(session: Session) -> tuple[int, bool]:
        found, in_recovery = session.execute(
            text("SELECT count(*), pg_is_in_recovery() FROM scale_items")
        ).one()
        return int(found), bool(in_recovery)

    try:
        contextvars.Context().run(db.create_all, metadata)
        second_replica.wait_for(current_lsn(replication.primary.url))
        second_replica.pause_replay()
        with db.transaction() as session:
            session.execute(items.insert().values(id=1, name="n1"))
        written = current_lsn(replication.primary.url)
        replication.replica.wait_for(written)
        _wait_for_probe(db, lambda replayed: replayed >= _lsn(written))  # the first host's
        assert db.transactional(read_only=True).run(read) == (1, True)
        replication.replica.shutdown()  # new connections reach the second host
        _wait_for_probe(db, lambda replayed: replayed < _lsn(written))  # the second host's
        assert db.transactional(read_only=True).run(read) == (1, False)  # was (0, True)
    finally:
        second_replica.resume_replay()
        db.dispose()
