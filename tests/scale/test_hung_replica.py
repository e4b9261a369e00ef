"""A replica whose server stops answering (SIGSTOP: a hung host) is ejected by the sync
monitor as by the async one, and re-admitted when it answers again; a hung primary does not
stall the monitor."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from dalkit import Database
from dalkit.testing.postgres import PostgresServer
from dalkit.testing.replication import Replication

from .helpers import wait_until


@contextmanager
def _hung(server: PostgresServer) -> Iterator[None]:
    postmaster = (server.data_dir / "postmaster.pid").read_text().split()[0]
    children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True)
    pids = [int(pid) for pid in [postmaster, *children.stdout.split()]]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
def db(replicated_database: tuple[str, str]) -> Iterator[Database]:
    """A Database with the replica, its monitor started and the replica found healthy."""
    primary, replica = replicated_database
    database = Database(primary, replicas=[replica], replica_monitor_interval_s=0.2)
    try:
        database.transactional(read_only=True).run(_in_recovery)
        wait_until(lambda: _state(database) == "healthy", timeout=10)
        yield database
    finally:
        database.dispose()


def _state(db: Database) -> str:
    return str(db.get_stats()["replicas"]["replicas"].popitem()[1]["state"])


def _in_recovery(session: Session) -> bool:
    return bool(session.scalar(text("SELECT pg_is_in_recovery()")))


@pytest.mark.slow
def test_a_hung_replica_is_ejected_and_reads_go_to_the_primary(
    db: Database, replication: Replication
) -> None:
    # the monitor's probe blocked for good on its pooled connection: the replica stayed
    # healthy, and every read sent to it hung
    with _hung(replication.replica):
        wait_until(lambda: _state(db) == "down", timeout=10)
        assert db.transactional(read_only=True).run(_in_recovery) is False
    wait_until(lambda: _state(db) == "healthy", timeout=20)


@pytest.mark.slow
def test_a_hung_primary_does_not_stall_the_sync_monitor(
    db: Database, replication: Replication
) -> None:
    # the monitor read the primary's position with no time limit: while the primary hung, it
    # probed no replica, and one that hung meanwhile stayed healthy, its reads sent to it
    with _hung(replication.primary):
        time.sleep(1.5)  # a monitor round without the primary: the replica is still in
        assert _state(db) == "healthy"
        assert db.transactional(read_only=True).run(_in_recovery) is True
        with _hung(replication.replica):
            wait_until(lambda: _state(db) == "down", timeout=10)  # stayed healthy
    wait_until(lambda: _state(db) == "healthy", timeout=20)
