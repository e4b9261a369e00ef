"""Tests that the harness's servers do not outlive their run: a ``kill -9`` of the process that
started them takes them down, and the next start removes what was left (never a live run's)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dalkit.testing import PostgresServer, RedisServer
from dalkit.testing._lifecycle import OWNER_FILE, SERVER_FILE, sweep

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")

# starts each kind of server through the harness (Redis from a thread that then ends), prints
# the server processes and their directories, and waits to be killed
_STARTER = textwrap.dedent(
    """
    import json, sys, threading, time
    from dalkit.testing import PostgresServer, RedisServer
    from dalkit.testing.pgbouncer import PgBouncerServer

    postgres = PostgresServer()
    postgres.start()
    cache = RedisServer()
    starter = threading.Thread(target=cache.start)
    starter.start()
    starter.join()
    bouncer = PgBouncerServer(postgres)
    bouncer.start()
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    print(json.dumps({
        "pids": [postmaster, cache._process.pid, bouncer._process.pid],
        "roots": [str(postgres._root), str(cache._root), str(bouncer._root)],
    }), flush=True)
    time.sleep(120)
    """
)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _namespace() -> str:
    return os.readlink("/proc/self/ns/pid").replace(" ", "")


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _wait_until(condition: object, timeout: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


@pytest.fixture
def killed_run(tmp_path: Path) -> Iterator[dict[str, list[Any]]]:
    """A run that started its servers and was killed with SIGKILL: what it had started."""
    script = tmp_path / "starter.py"
    script.write_text(_STARTER)
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    started: dict[str, list[Any]] = {"pids": [], "roots": []}
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
        assert line, "the starter died before its servers were up"
        started = json.loads(line)
        run.send_signal(signal.SIGKILL)
        run.wait()
        yield started
    finally:
        run.kill()
        run.wait()
        if run.stdout is not None:
            run.stdout.close()
        for pid in started["pids"]:  # whatever the code under test left, this test does not
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        for root in started["roots"]:
            subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.postgres
def test_a_killed_runs_servers_die_with_it_and_the_next_start_removes_their_files(
    killed_run: dict[str, list[Any]],
) -> None:
    pids = [int(pid) for pid in killed_run["pids"]]
    roots = [Path(root) for root in killed_run["roots"]]
    assert _wait_until(lambda: not any(_running(pid) for pid in pids), 5), [
        pid for pid in pids if _running(pid)
    ]
    assert all(root.is_dir() for root in roots)  # nobody was left to remove them

    # the next run's first server sweeps them, as any harness start does
    subprocess.run(
        [sys.executable, "-c", "from dalkit.testing import RedisServer\nRedisServer().start()"],
        check=True,
        timeout=60,
    )
    assert not any(root.exists() for root in roots)


def test_a_live_runs_servers_and_files_are_never_swept(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    with RedisServer() as server:
        root = server._root
        assert root is not None
        swept = sweep([str(root.parent), str(postgres_server.data_dir.parent.parent)])
        assert root not in swept
        assert postgres_server.data_dir.parent not in swept
        assert root.is_dir()
        assert postgres_server.data_dir.is_dir()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()


def test_a_server_started_from_a_thread_that_ended_keeps_running() -> None:
    server = RedisServer()
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    try:
        time.sleep(0.3)
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
    finally:
        server.stop()


def test_the_sweep_takes_only_what_a_dead_owner_left(tmp_path: Path) -> None:
    dead = _dead_pid()
    namespace = _namespace()
    orphan = tmp_path / "dalkit-redis-orphan"
    orphan.mkdir()
    (orphan / OWNER_FILE).write_text(f"{dead} 1 {namespace}")
    live = tmp_path / "dalkit-redis-live"
    live.mkdir()
    (live / OWNER_FILE).write_text(f"{os.getpid()} - {namespace}")
    elsewhere = tmp_path / "dalkit-redis-elsewhere"  # another container's: its owner is unseen
    elsewhere.mkdir()
    (elsewhere / OWNER_FILE).write_text(f"{dead} 1 pid:[1]")
    unowned = tmp_path / "dalkit-pg-starting"  # being created, or made by an older version
    (unowned / "data").mkdir(parents=True)
    other = tmp_path / "someone-elses"
    other.mkdir()

    assert sweep([str(tmp_path)]) == [orphan]
    assert {path.name for path in tmp_path.iterdir()} == {
        "dalkit-redis-live",
        "dalkit-redis-elsewhere",
        "dalkit-pg-starting",
        "someone-elses",
    }


def test_an_older_versions_cluster_is_swept_only_when_its_postmaster_died(
    tmp_path: Path,
) -> None:
    dead = _dead_pid()
    long_ago = time.time() - 3600
    clusters = {}
    with socket.socket() as listener:  # the port of a postmaster this process cannot see
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        served = listener.getsockname()[1]
        for name, pid, port in [
            ("crashed", dead, 1),
            ("running", os.getpid(), 1),
            ("elsewhere", dead, served),
        ]:
            lock = tmp_path / f"dalkit-pg-{name}" / "data" / "postmaster.pid"
            lock.parent.mkdir(parents=True)
            lock.write_text(f"{pid}\n{lock.parent}\n1700000000\n{port}\n")
            os.utime(lock, (long_ago, long_ago))
            clusters[name] = lock.parent.parent
        just_crashed = tmp_path / "dalkit-pg-just" / "data" / "postmaster.pid"
        just_crashed.parent.mkdir(parents=True)
        just_crashed.write_text(f"{dead}\n")  # an initdb between two of its steps looks so

        assert sweep([str(tmp_path)]) == [clusters["crashed"]]


def test_the_sweep_stops_a_server_its_dead_owner_left_running(tmp_path: Path) -> None:
    # a server that outlived its owner (one started before this version, say)
    survivor = subprocess.Popen(["sleep", "60"])
    try:
        orphan = tmp_path / "dalkit-redis-survivor"
        orphan.mkdir()
        (orphan / OWNER_FILE).write_text(f"{_dead_pid()} 1 {_namespace()}")
        (orphan / SERVER_FILE).write_text(
            f"{survivor.pid} {_start_time(survivor.pid)} - {int(signal.SIGTERM)}"
        )
        assert sweep([str(tmp_path)]) == [orphan]
        assert survivor.wait(timeout=5) == -signal.SIGTERM
    finally:
        survivor.kill()
        survivor.wait()


_FORKER = textwrap.dedent(
    """
    import os, sys
    import psycopg, redis
    from dalkit.testing import PostgresServer, RedisServer

    with PostgresServer() as postgres, RedisServer() as cache:
        child = os.fork()
        if child == 0:
            sys.exit(0)  # a normal exit runs the exit handlers the child inherited
        os.waitpid(child, 0)
        with psycopg.connect(postgres.url, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
        with redis.Redis.from_url(cache.url) as client:
            client.ping()
        assert cache._root.is_dir() and postgres.data_dir.is_dir()
    print("servers kept")
    """
)


@pytest.mark.postgres
def test_a_forked_child_that_exits_leaves_its_parents_servers_running(tmp_path: Path) -> None:
    script = tmp_path / "forker.py"
    script.write_text(_FORKER)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.stdout.strip() == "servers kept", run.stderr[-2000:]
