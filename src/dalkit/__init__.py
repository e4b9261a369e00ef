"""dalkit: a typed, tested data-access layer on SQLAlchemy 2.x: instrumented pools, health checks
and one error tree, for sync and async code alike."""

from __future__ import annotations

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

__all__ = [
    "AsyncDatabase",
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
    "SerializationError",
    "StatementTimeoutError",
    "TransientError",
    "UniqueViolationError",
]
