"""What the throwaway test servers share: a free loopback port, where their files go and the
account they run as, running state, a context manager."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dalkit.errors import DalkitError
from dalkit.testing._lifecycle import make_scratch

# A RAM disk for the servers' files, when it has room. Durability is worthless for files deleted
# after the run, and the disk is what a PostgreSQL test waits on: measured here (ext4 on a VM's
# disk), CREATE DATABASE took ~250 ms once earlier tests had written (page-cache writeback of the
# template's copy) against ~21 ms on tmpfs, and the cache tests' PostgreSQL half ran in 43 s
# instead of 82 s. Docker's default /dev/shm (64 MB) is too small, hence the room required.
RAM_DISK = Path("/dev/shm")
RAM_DISK_MIN_FREE = 2 * 1024**3
# starts on a port another process took between free_port() and the server's bind, which
# parallel test runs (and every outgoing connection's source port) make possible
PORT_TRIES = 3
_SERVICE_USER = "postgres"


class ServerStartError(DalkitError, RuntimeError):
    """A throwaway test server could not start: its binaries are missing, its port is taken,
    or it failed or did not answer in time; the message says which, with the server's log,
    never its password."""


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
        self._requested_port: int | None = None
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

    def _start_on_a_free_port(self, launch: Callable[[], None], log: Path) -> None:
        """Run ``launch``, which starts the server on ``self._port`` and waits until it
        answers; when no port was asked for and another process took the one chosen before
        the server could bind it (``log`` says so), again on another."""
        for attempt in range(1, PORT_TRIES + 1):
            self._port = self._requested_port or free_port()
            offset = log.stat().st_size if log.exists() else 0
            try:
                launch()
                return
            except ServerStartError:
                if self._requested_port is not None or attempt == PORT_TRIES:
                    raise
                with log.open("rb") as file:
                    file.seek(offset)
                    if b"Address already in use" not in file.read():
                        raise

    @property
    def running(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port


class Owner:
    """The account the cluster's processes run as: PostgreSQL refuses to run as root."""

    def __init__(self, uid: int | None, gid: int | None) -> None:
        self.uid = uid
        self.gid = gid

    @classmethod
    def for_current_process(cls) -> Owner:
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return cls(None, None)
        import pwd  # POSIX only; imported here so the plugin still loads elsewhere

        try:
            entry = pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    _SERVICE_USER,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(_SERVICE_USER)
        return cls(entry.pw_uid, entry.pw_gid)

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def subprocess_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        # extra_groups=[] drops root's supplementary groups as well.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def make_root(owner: Owner, prefix: str = "dalkit-pg-") -> Path:
    """A scratch directory (`make_scratch`) that ``owner`` can reach and owns."""
    base = scratch_base()
    if owner.uid is not None and not _traversable_by_others(Path(base or tempfile.gettempdir())):
        # The service user must reach its data directory; /tmp always lets it.
        base = "/tmp"
    root = make_scratch(prefix, base)
    owner.chown(root)
    return root


def _traversable_by_others(path: Path) -> bool:
    return all(
        parent.stat().st_mode & 0o001 for parent in [path.resolve(), *path.resolve().parents]
    )
