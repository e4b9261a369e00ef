"""A replica whose server stops answering (SIGSTOP: a hung host) is ejected by the sync
monitor as by the async one, and re-admitted when it answers again."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from dalkit import Database
from dalkit.testing.replication import ReplicaServer, Replication

from .helpers import wait_until


@contextmanager
def _hung(server: ReplicaServer) -> Iterator[None]:
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


@pytest.mark.slow
def test_a_hung_replica_is_ejected_and_reads_go_to_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    # the monitor's probe blocked for good on its pooled connection: the replica stayed
    # healthy, and every read sent to it hung
    primary, replica = replicated_database
    db = Database(primary, replicas=[replica], replica_monitor_interval_s=0.2)

    def state() -> str:
        return str(db.get_stats()["replicas"]["replicas"].popitem()[1]["state"])

    try:
        assert (
            db.transactional(read_only=True).run(lambda session: session.scalar(text("SELECT 1")))
            == 1
        )
        wait_until(lambda: state() == "healthy", timeout=10)
        with _hung(replication.replica):
            wait_until(lambda: state() == "down", timeout=10)
            assert (
                db.transactional(read_only=True).run(
                    lambda session: session.scalar(text("SELECT 2"))
                )
                == 2
            )
        wait_until(lambda: state() == "healthy", timeout=20)
    finally:
        db.dispose()
