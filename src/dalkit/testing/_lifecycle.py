"""That the test servers cannot outlive the run that started them.

Two halves. A server is started to die with its starter: on Linux its process gets the
parent-death signal (``prctl(PR_SET_PDEATHSIG)``), so a ``kill -9`` of pytest takes the
PostgreSQL postmaster (SIGQUIT: it stops its own children and frees its shared memory), the
redis-server and the PgBouncer with it. And each server's scratch directory records its owner
(process id and start time), so the first start in a process sweeps the directories, and stops
the servers, of owners that are gone; a live run's, whoever it is, is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

__all__ = ["in_this_process_only", "make_scratch", "spawn", "stop_process", "sweep"]

PREFIXES = ("dalkit-pg-", "dalkit-redis-", "dalkit-pgbouncer-")
OWNER_FILE = "dalkit-owner"
SERVER_FILE = "dalkit-server"
_STOP_WAIT_S = 5.0
# a cluster left by a run of a version that recorded no owner, whose postmaster.pid names a
# dead process, is swept once that file is this old (a live initdb rewrites it in between)
_LEGACY_STALE_S = 60.0
_PR_SET_PDEATHSIG = 1

_swept = False
_sweep_lock = threading.Lock()


def make_scratch(prefix: str, base: str | None) -> Path:
    """A new scratch directory under ``base``, recording this process as its owner; the first
    one of the process sweeps the leftovers of dead owners first.

    Args:
        prefix: One of `PREFIXES`.
        base: The parent directory (None: the system's temporary directory).

    Returns:
        The directory.
    """
    global _swept
    with _sweep_lock:
        if not _swept:
            _swept = True
            sweep([base, tempfile.gettempdir(), "/tmp"])
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (root / OWNER_FILE).write_text(_identity(os.getpid()))
    return root


def spawn(
    args: Sequence[str], root: Path, death_signal: int, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start a server process that gets ``death_signal`` when this process dies, in a session
    of its own (a Ctrl-C in the terminal reaches pytest, which stops it in order); it is
    recorded in ``root`` for the sweep.

    Args:
        args: The command line.
        root: The server's scratch directory (from `make_scratch`).
        death_signal: The signal the server gets when this process dies.
        **popen: More arguments of ``subprocess.Popen``.

    Returns:
        The running process.
    """

    def start() -> subprocess.Popen[bytes]:
        parent = os.getpid()
        process = subprocess.Popen(
            args,
            start_new_session=True,
            preexec_fn=_die_with(parent, death_signal) if _LIBC is not None else None,
            **popen,
        )
        (root / SERVER_FILE).write_text(f"{_identity(process.pid)} {death_signal}")
        return process

    # the signal comes when the *thread* that started the process ends: a server started from
    # a short-lived thread (a pool starting servers side by side) would die with it
    if _LIBC is None or threading.current_thread() is threading.main_thread():
        return start()
    return _Launcher.run(start)


def in_this_process_only(stop: Callable[..., None]) -> Callable[..., None]:
    """``stop``, made a no-op in any other process than this one: a forked child that exits
    normally runs the exit handlers it inherited, which must not stop its parent's servers.

    Args:
        stop: What stops a server and removes its files.

    Returns:
        The guarded function, for ``weakref.finalize``.
    """
    starter = os.getpid()

    def guarded(*args: Any) -> None:
        if os.getpid() == starter:
            stop(*args)

    return guarded


def stop_process(process: subprocess.Popen[bytes], root: Path) -> None:
    """Terminate ``process``, killing it if it takes too long, and remove ``root``.

    Args:
        process: A server started by `spawn`.
        root: Its scratch directory.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_WAIT_S * 2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(root, ignore_errors=True)


def sweep(bases: Sequence[str | None]) -> list[Path]:
    """Stop the servers and remove the scratch directories of owners that are gone.

    Args:
        bases: The directories to look in (None: the system's temporary directory).

    Returns:
        The directories removed.
    """
    removed = []
    seen: set[Path] = set()
    for base in bases:
        directory = Path(base or tempfile.gettempdir())
        with contextlib.suppress(OSError):
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            for root in directory.iterdir():
                if root.name.startswith(PREFIXES) and _abandoned(root):
                    _stop_recorded_server(root)
                    shutil.rmtree(root, ignore_errors=True)
                    removed.append(root)
    return removed


def _abandoned(root: Path) -> bool:
    try:
        owner = (root / OWNER_FILE).read_text().split()
    except NotADirectoryError:
        return False
    except FileNotFoundError:
        return _legacy_abandoned(root)
    except OSError:
        return False
    if len(owner) != 3 or owner[2] != _pid_namespace():
        return False  # another machine's or container's: its processes are not visible here
    return not _alive(int(owner[0]), owner[1])


def _legacy_abandoned(root: Path) -> bool:
    # a cluster of a version that recorded no owner: only when its postmaster died unclean
    lock = root / "data" / "postmaster.pid"
    try:
        before = lock.read_text()
        age = time.time() - lock.stat().st_mtime
        pid = int(before.split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if age < _LEGACY_STALE_S or _alive(pid, None) or _listened_on(before):
        return False
    # a postmaster that stops removes the file: still there, unchanged, it died unclean
    with contextlib.suppress(OSError):
        return lock.read_text() == before
    return False


def _listened_on(lock: str) -> bool:
    # a postmaster of another process namespace sharing these files may still serve its port
    try:
        port = int(lock.splitlines()[3])
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except (OSError, ValueError, IndexError):
        return False


def _stop_recorded_server(root: Path) -> None:
    try:  # `_identity()` and the signal
        fields = (root / SERVER_FILE).read_text().split()
        pid, start, sig = int(fields[0]), fields[1], int(fields[-1])
    except (OSError, ValueError, IndexError):
        return
    if not _alive(pid, start):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
    deadline = time.monotonic() + _STOP_WAIT_S
    while _alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid, start):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _identity(pid: int) -> str:
    """``pid start-time pid-namespace``: the start time tells a reused process id apart."""
    return f"{pid} {_start_time(pid) or '-'} {_pid_namespace()}"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is dead, only not reaped yet
        return None
    return fields[19]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").replace(" ", "")
    except OSError:
        return "-"


def _alive(pid: int, start: str | None) -> bool:
    if Path("/proc/self/stat").exists():
        current = _start_time(pid)
        return current is not None and start in (None, "-", current)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with(parent: int, death_signal: int) -> Callable[[], None]:
    def in_child() -> None:
        # after the change of user (which clears the setting), before exec (which keeps it)
        _LIBC.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return in_child


class _Launcher:
    """One thread, alive as long as the process, that starts the servers of other threads."""

    _queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None
    _lock = threading.Lock()

    @classmethod
    def run(cls, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with cls._lock:
            if cls._queue is None:
                cls._queue = queue.SimpleQueue()
                threading.Thread(
                    target=cls._serve, args=(cls._queue,), name="dalkit-launcher", daemon=True
                ).start()
        done: Future[subprocess.Popen[bytes]] = Future()
        cls._queue.put((start, done))
        return done.result()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
        while True:
            start, done = jobs.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # handed to the waiting thread
                done.set_exception(exc)
