"""HealthCheckResult: what a database health check found, built without I/O from what it saw."""

from __future__ import annotations

import dataclasses
from time import perf_counter
from typing import Any

from sqlalchemy.engine import Dialect

from dalkit.config import DatabaseConfig

__all__ = ["HealthCheckResult"]


@dataclasses.dataclass(frozen=True)
class HealthCheckResult:
    """What a health check found: ``ok`` with the round-trip latency and server facts, or
    ``error`` saying what went wrong.

    ``url`` is masked and ``error`` never contains a secret: it is scrubbed with every secret
    of the config (password, connect-argument secrets, secret_key).

    Attributes:
        ok: Whether the server answered ``SELECT 1``.
        latency_ms: The round trip (or the time until the failure), in milliseconds.
        server_version: The server's version (``"16.4"``), None when it did not answer.
        database: The database name of the URL.
        backend: ``"postgresql"`` or ``"sqlite"``.
        url: The URL with the password masked.
        error: ``"ExceptionName: first line of the message"``, scrubbed; None when ``ok``.

    Examples:
        ```python
        from dalkit import Database

        print(Database("sqlite:///:memory:").health_check().ok)
        #> True
        ```
    """

    ok: bool
    latency_ms: float
    server_version: str | None
    database: str | None
    backend: str
    url: str
    error: str | None = None

    @classmethod
    def passed(cls, config: DatabaseConfig, dialect: Dialect, started: float) -> HealthCheckResult:
        """A check that succeeded.

        Args:
            config: The database's configuration (for the masked URL and database name).
            dialect: The dialect of the connection that answered (for the server version).
            started: ``time.perf_counter()`` when the check began.

        Returns:
            An ``ok`` result.
        """
        info = dialect.server_version_info
        version = ".".join(str(part) for part in info) if info else None
        return cls(
            ok=True,
            latency_ms=_since(started),
            server_version=version,
            database=config.url.database,
            backend=config.backend,
            url=config.safe_url,
        )

    @classmethod
    def failed(
        cls, config: DatabaseConfig, error: BaseException, started: float
    ) -> HealthCheckResult:
        """A check that failed, its error scrubbed of every secret of ``config``.

        Args:
            config: The database's configuration (for the masked URL and the secrets).
            error: What connecting or querying raised.
            started: ``time.perf_counter()`` when the check began.

        Returns:
            A result that is not ``ok``.
        """
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return cls(
            ok=False,
            latency_ms=_since(started),
            server_version=None,
            database=config.url.database,
            backend=config.backend,
            url=config.safe_url,
            error=config.scrub(f"{type(error).__name__}: {message}"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what ``dalkit doctor --json`` prints).

        Returns:
            The fields by name.
        """
        return dataclasses.asdict(self)


def _since(started: float) -> float:
    return round((perf_counter() - started) * 1000.0, 3)
