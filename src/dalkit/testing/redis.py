"""Throwaway ``redis-server`` processes for tests, on a free loopback port with no persistence."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import weakref
from pathlib import Path

from dalkit.testing._lifecycle import in_this_process_only, make_scratch, spawn, stop_process
from dalkit.testing._server import LocalServer, ServerStartError, scratch_base

__all__ = ["RedisServer"]

_READY_TIMEOUT = 30.0
_LOG_TAIL_LINES = 30


class RedisServer(LocalServer):
    """A private ``redis-server`` on 127.0.0.1, removed again by ``stop()``.

    Args:
        port: The port to listen on (default: a free one).
        executable: The ``redis-server`` to run (default: the one on ``PATH``).
    """

    def __init__(self, *, port: int | None = None, executable: str | Path | None = None) -> None:
        super().__init__()
        self._executable = Path(executable) if executable is not None else _find_executable()
        self._requested_port = port
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL of database 0 of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server in a temporary directory; does nothing when it runs already."""
        if self.running:
            return
        if not self._executable.is_file():
            raise ServerStartError(
                f"no redis-server at {self._executable} "
                "(install redis-server, or set DALKIT_TEST_REDIS_URL)"
            )
        self._root = make_scratch("dalkit-redis-", scratch_base())
        try:
            self._start_on_a_free_port(self._launch, self._root / "server.log")
        except BaseException:
            self.stop()
            shutil.rmtree(self._root, ignore_errors=True)  # when nothing was launched
            raise

    def _launch(self) -> None:
        assert self._root is not None
        if self._finalizer is not None:  # a start that failed: keep its files for this one
            self._finalizer.detach()
        args = [
            str(self._executable),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self._port),
            "--dir",
            str(self._root),
            # Tests want a blank server every run, never a dump left on disk.
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        with (self._root / "server.log").open("ab") as log:
            # The child keeps its own copy of the log descriptor; ours closes here.
            self._process = spawn(
                args,
                self._root,
                signal.SIGKILL,  # it keeps nothing: no dump, no append-only file
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._root,
            )
        self._finalizer = weakref.finalize(
            self, in_this_process_only(stop_process), self._process, self._root
        )
        self._wait_until_ready()

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._process = None

    def _wait_until_ready(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert self._process is not None
        # This loop is the retry policy; redis-py's own backoff would add seconds to each try.
        no_retry = Retry(NoBackoff(), 0)
        deadline = time.monotonic() + _READY_TIMEOUT
        last_error = ""
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                last_error = f"redis-server exited with code {self._process.returncode}"
                break
            try:
                with redis.Redis(
                    host="127.0.0.1", port=self.port, socket_timeout=1, retry=no_retry
                ) as client:
                    if client.ping():
                        return
            except redis.RedisError as exc:  # a timeout too: the port may not be ours
                last_error = str(exc)
            time.sleep(0.05)
        raise ServerStartError(
            f"redis-server on 127.0.0.1:{self.port} did not answer PING ({last_error})\n"
            + self._log_tail()
        )

    def _log_tail(self) -> str:
        assert self._root is not None
        try:
            lines = (self._root / "server.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = ["(no server log was written)"]
        return "server log (last lines):\n" + "\n".join(lines[-_LOG_TAIL_LINES:])


def _find_executable() -> Path:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if found is None:
        raise ServerStartError(
            "redis-server not found on PATH (install redis-server, or set DALKIT_TEST_REDIS_URL)"
        )
    return Path(found)
