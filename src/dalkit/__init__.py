"""dalkit: a typed, tested data-access layer on SQLAlchemy 2.x: instrumented pools, health checks
and one error tree, for sync and async code alike."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import DatabaseConfig
from .database import Database
from .database_async import AsyncDatabase
from .errors import (
    CheckViolationError,
    ConfigurationError,
    ConnectionFailedError,
    ConnectionLostError,
    DalkitError,
    DatabaseBusyError,
    DatabaseError,
    DeadlockError,
    ForeignKeyViolationError,
    IntegrityError,
    NotNullViolationError,
    PoolTimeoutError,
    SerializationError,
    StatementTimeoutError,
    TransientError,
    UniqueViolationError,
)
from .health import HealthCheckResult

if TYPE_CHECKING:
    from .redis_manager import RedisManager
    from .redis_manager_async import AsyncRedisManager

# name -> module: imported on first use, so that importing dalkit never imports an extra
_LAZY = {
    "AsyncRedisManager": "dalkit.redis_manager_async",
    "RedisManager": "dalkit.redis_manager",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncDatabase",
    "AsyncRedisManager",
    "CheckViolationError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionLostError",
    "DalkitError",
    "Database",
    "DatabaseBusyError",
    "DatabaseConfig",
    "DatabaseError",
    "DeadlockError",
    "ForeignKeyViolationError",
    "HealthCheckResult",
    "IntegrityError",
    "NotNullViolationError",
    "PoolTimeoutError",
    "RedisManager",
    "SerializationError",
    "StatementTimeoutError",
    "TransientError",
    "UniqueViolationError",
]
