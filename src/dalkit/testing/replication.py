"""Throwaway streaming replication for tests: a primary and a hot-standby replica cloned with
``pg_basebackup -R``, with replay pause/resume, stop/start and promotion; plus pytest fixtures.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dalkit.engine.autoroute import PRIMARY_POSITION
from dalkit.testing._server import ServerStartError
from dalkit.testing.postgres import SUPERUSER, PostgresServer, create_database, drop_database

__all__ = [
    "ReplicaServer",
    "Replication",
    "failover_replication",
    "replicated_database",
    "replication",
]

_CATCH_UP_TIMEOUT = 30.0


class ReplicaServer(PostgresServer):
    """A hot standby of ``primary``: its data directory is a base backup of the primary's,
    and it streams (and replays) the primary's WAL from then on."""

    _binaries = ("pg_basebackup", "pg_ctl", "postgres")

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__()
        self.primary = primary
        self._password = primary.password  # the same cluster: the same roles
        # A physical slot on the primary keeps the WAL this replica has not received yet:
        # without one, a checkpoint (every base backup and DROP DATABASE forces one) could
        # remove a segment a replica that lags or was shut down still needs, which leaves
        # it stuck for good ("requested WAL segment ... has already been removed").
        self._slot = f"dalkit_replica_{uuid.uuid4().hex[:16]}"

    def _initdb(self) -> None:
        # pg_basebackup instead of initdb; -R writes standby.signal and primary_conninfo
        root = self._require_root()
        owner = self._require_owner()
        result = subprocess.run(
            [
                str(self._bin_dir / "pg_basebackup"),
                f"--pgdata={root / 'data'}",
                "--host=127.0.0.1",
                f"--port={self.primary.port}",
                f"--username={SUPERUSER}",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--write-recovery-conf",
                "--create-slot",
                f"--slot={self._slot}",
                "--no-sync",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGPASSWORD": self._password},
            **owner.subprocess_kwargs(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).replace(self._password, "***")
            raise ServerStartError(f"pg_basebackup failed ({result.returncode}):\n{output}")
        # -R may leave the password out of primary_conninfo; the later line wins
        conninfo = (
            f"host=127.0.0.1 port={self.primary.port} user={SUPERUSER} "
            f"password={self._password} application_name=dalkit_replica"
        )
        with (root / "data" / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")

    def _configure(self) -> None:
        super()._configure()
        # the primary's synchronous_standby_names came with the base backup: once promoted,
        # this node has no standby of its own to wait for
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("synchronous_standby_names = ''\n")

    def stop(self) -> None:
        """Stop the server, remove its files and drop its slot on the primary, if that runs."""
        started = self.running
        super().stop()
        if started and self.primary.running:
            self._drop_slot()

    def _drop_slot(self) -> None:
        import psycopg

        deadline = time.monotonic() + 10.0
        while True:
            try:
                with psycopg.connect(
                    self.primary.url, autocommit=True, connect_timeout=5
                ) as connection:
                    row = connection.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                        (self._slot,),
                    ).fetchone()
                    if row is None:
                        return
                    if not row[0]:  # its walsender has gone
                        connection.execute("SELECT pg_drop_replication_slot(%s)", (self._slot,))
                        return
            except psycopg.OperationalError:
                return  # the primary is down (a failover test): its slots go with it
            if time.monotonic() > deadline:
                return  # still held: it only keeps WAL until the primary stops
            time.sleep(0.05)

    # -- control --------------------------------------------------------------------------
    def pause_replay(self) -> None:
        """Keep receiving WAL but stop applying it: lag on demand."""
        self._execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self._execute("SELECT pg_wal_replay_resume()")

    def replay_lsn(self) -> str:
        return str(self._query("SELECT pg_last_wal_replay_lsn()::text"))

    def wait_for(self, lsn: str, timeout: float = _CATCH_UP_TIMEOUT) -> None:
        """Block until this replica has replayed up to ``lsn``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._query(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"the replica did not replay up to {lsn} within {timeout:.0f}s\n{self._log_tail()}"
        )

    def shutdown(self) -> None:
        """Stop the server but keep its files, so that `start_again()` can bring it back."""
        self._pg_ctl_stop("fast")

    def start_again(self) -> None:
        self._launch()

    def promote(self) -> None:
        """Make this standby a primary (``pg_ctl promote`` waits until it accepts writes)."""
        self._run(self._pg_ctl_args("promote", "-w", "-t", "30"), "pg_ctl promote")

    def _execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(statement)

    def _query(self, statement: str) -> object:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            row = connection.execute(statement).fetchone()
        return None if row is None else row[0]


def stop_immediately(server: PostgresServer) -> None:
    """Crash-stop ``server`` (``pg_ctl stop -m immediate``): what losing a primary looks like."""
    server._pg_ctl_stop("immediate")


def current_lsn(url: str) -> str:
    """The primary's WAL position a replica has to replay up to for every commit so far: the
    router's own reading (the insert position, short of a page header it may point past:
    after a WAL switch, a replica's replay position stops at the segment's start until the
    next record, which an idle primary writes only every 15 s or more)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        row = connection.execute(PRIMARY_POSITION).fetchone()
    assert row is not None
    return str(row[0])


class Replication:
    """A primary and one streaming replica, started together and stopped together."""

    def __init__(self, *, synchronous: bool = False) -> None:
        self.primary = PostgresServer()
        self.replica = ReplicaServer(self.primary)
        self._synchronous = synchronous

    def start(self) -> None:
        self.primary.start()
        try:
            if self._synchronous:
                # the harness turns synchronous_commit off for speed; a commit must wait for
                # the standby to have it for the failover test's counts to mean anything
                with (self.primary.data_dir / "postgresql.conf").open("a") as conf:
                    conf.write("synchronous_commit = on\nsynchronous_standby_names = '*'\n")
                self.primary.restart()
            self.replica.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()

    def create_database(self, name: str) -> tuple[str, str]:
        """Create ``name`` on the primary, wait until the replica has it; both URLs."""
        primary_url = create_database(self.primary.url, name)
        self.replica.wait_for(current_lsn(self.primary.url))
        return primary_url, self.replica.url_for(name)

    def drop_database(self, name: str) -> None:
        drop_database(self.primary.url, name)

    def __enter__(self) -> Replication:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _started(synchronous: bool = False) -> Replication:
    try:  # finding the binaries may fail too
        replication = Replication(synchronous=synchronous)
        replication.start()
    except Exception as exc:
        pytest.fail(f"could not start a replicated PostgreSQL pair: {exc}", pytrace=False)
    return replication


@pytest.fixture(scope="session")
def replication() -> Iterator[Replication]:
    """A primary and an asynchronous streaming replica for the test session."""
    pair = _started()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def replicated_database(replication: Replication) -> Iterator[tuple[str, str]]:
    """A fresh database on the session's pair: ``(primary_url, replica_url)``, driverless;
    replay is resumed and the replica running again after the test, whatever it did."""
    name = f"r_{uuid.uuid4().hex}"
    urls = replication.create_database(name)
    try:
        yield urls
    finally:
        replica = replication.replica
        if not _accepts_connections(replica):
            replica.start_again()
        replica.resume_replay()
        replication.drop_database(name)
        replica.wait_for(current_lsn(replication.primary.url))


@pytest.fixture
def failover_replication() -> Iterator[Replication]:
    """A pair of its own with synchronous replication, for a test that kills the primary."""
    pair = _started(synchronous=True)
    try:
        yield pair
    finally:
        pair.stop()


def _accepts_connections(server: PostgresServer) -> bool:
    return (server.data_dir / "postmaster.pid").exists() and Path(server.data_dir).is_dir()
