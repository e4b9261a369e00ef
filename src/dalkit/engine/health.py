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
    """``ok`` with the round-trip latency and server facts, or ``error`` saying what went wrong.

    ``url`` is masked and ``error`` never contains a secret: it is scrubbed with every secret
    of the config (password, connect-argument secrets, secret_key).
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
        return dataclasses.asdict(self)


def _since(started: float) -> float:
    return round((perf_counter() - started) * 1000.0, 3)
