"""What the throwaway test servers share: a free loopback port, running state, a context manager."""

from __future__ import annotations

import socket
import weakref
from types import TracebackType
from typing import Any, Self


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
