"""A replica whose server stops answering (SIGSTOP: a hung host) is ejected by the sync
monitor as by the async one, and re-admitted when it answers again; a hung primary does not
stall the monitor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from dalkit import Database, current_session
from dalkit.integrations.asgi import DatabaseMiddleware
from dalkit.testing.postgres import PostgresServer
from dalkit.testing.replication import Replication

from .helpers import MonitorProbes, wait_until

#: how long the monitor waits for a probe (dalkit.engine.probes.probe_timeout: 2 intervals)
PROBE_LIMIT = 2.0


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
        wait_until(lambda: _state(database) == "healthy", seen=lambda: _stats(database))
        yield database
    finally:
        database.dispose()


def _stats(db: Database) -> dict[str, Any]:
    replica: dict[str, Any] = db.get_stats()["replicas"]["replicas"].popitem()[1]
    return replica


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
        wait_until(lambda: _state(db) == "down", seen=lambda: _stats(db))
        assert db.transactional(read_only=True).run(_in_recovery) is False
    wait_until(lambda: _state(db) == "healthy", seen=lambda: _stats(db))


@pytest.mark.slow
def test_a_hung_primary_does_not_stall_the_sync_monitor(
    db: Database, replication: Replication
) -> None:
    # the monitor read the primary's position with no time limit: while the primary hung, it
    # probed no replica, and one that hung meanwhile stayed healthy, its reads sent to it
    probes = MonitorProbes(db.replica_engines)
    with _hung(replication.primary):
        # a whole monitor round without the primary (the first round after this may have
        # sampled it before): the replica is still in. 1.5 s of sleep held no whole round
        # once the machine was loaded enough, and the test went on with nothing checked
        hung_at = probes.count
        wait_until(probes.rounds_from(hung_at, rounds=2), seen=lambda: _stats(db))
        assert _state(db) == "healthy", _stats(db)
        assert db.transactional(read_only=True).run(_in_recovery) is True
        with _hung(replication.replica):
            wait_until(lambda: _state(db) == "down", seen=lambda: _stats(db))  # stayed healthy
    wait_until(lambda: _state(db) == "healthy", seen=lambda: _stats(db))


@pytest.mark.slow
@pytest.mark.parametrize("read_only_methods", [(), ("GET",)])
async def test_a_sync_database_s_first_request_does_not_stall_the_event_loop(
    replicated_database: tuple[str, str],
    replication: Replication,
    read_only_methods: tuple[str, ...],
) -> None:
    # DatabaseMiddleware opens a sync Database's transaction on the event loop, where the
    # router waited for the monitor's first round: the probe's limit with a hung replica
    primary, replica = replicated_database
    # a probe limit well above what a loaded machine stalls the loop for on its own
    db = Database(primary, replicas=[replica], replica_monitor_interval_s=PROBE_LIMIT / 2)

    def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(current_session().scalar(select(func.count()))))

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(DatabaseMiddleware, db=db, read_only_methods=read_only_methods)],
    )
    stalls: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            stalls.append(time.monotonic() - last)
            last = time.monotonic()

    transport = httpx.ASGITransport(app=app)
    try:
        with _hung(replication.replica):
            ticking = asyncio.create_task(ticker())
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.get("/")).text == "1"
            ticking.cancel()
        # was the probe's limit (2 s). Half of it: the loop also runs the sync transaction (a
        # connect, a query) itself, which took up to 0.36 s beside two CPU burners
        assert max(stalls) < PROBE_LIMIT / 2, stalls
    finally:
        db.dispose()
