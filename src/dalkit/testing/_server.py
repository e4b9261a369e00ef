"""What the throwaway test servers share: a free loopback port, where their files go, running
state, a context manager."""

from __future__ import annotations

import os
import shutil
import socket
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Self

# A RAM disk for the servers' files, when it has room. Durability is worthless for files deleted
# after the run, and the disk is what a PostgreSQL test waits on: measured here (ext4 on a VM's
# disk), CREATE DATABASE took ~250 ms once earlier tests had written (page-cache writeback of the
# template's copy) against ~21 ms on tmpfs, and the cache tests' PostgreSQL half ran in 43 s
# instead of 82 s. Docker's default /dev/shm (64 MB) is too small, hence the room required.
RAM_DISK = Path("/dev/shm")
RAM_DISK_MIN_FREE = 2 * 1024**3


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scratch_base() -> str | None:
    """The directory new server files go under: ``$TMPDIR`` when it is set, else the RAM disk
    when it has room, else ``None`` (the system's temporary directory)."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        room = shutil.disk_usage(RAM_DISK).free
    except OSError:
        return None
    if room < RAM_DISK_MIN_FREE or not os.access(RAM_DISK, os.W_OK | os.X_OK):
        return None
    return str(RAM_DISK)


class LocalServer:
    """A server process on 127.0.0.1; subclasses start it and arm ``_finalizer`` to stop it."""

    def __init__(self) -> None:
        self._port: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self._port}, running={self.running})"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port
