"""dalkit: a typed, tested data-access layer on SQLAlchemy 2.x: instrumented pools, health checks
and one error tree, for sync and async code alike."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .audit import Audited
from .config import DatabaseConfig
from .database import Database
from .database_async import AsyncDatabase
from .errors import (
    BulkLoadError,
    CheckViolationError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConnectionFailedError,
    ConnectionLostError,
    DalkitError,
    DatabaseBusyError,
    DatabaseError,
    DeadlockError,
    ForeignKeyViolationError,
    IntegrityError,
    InvalidCursorError,
    InvalidFilterError,
    InvalidQueryError,
    InvalidSortError,
    NoActiveTransactionError,
    NotFoundError,
    NotNullViolationError,
    OutboxError,
    PoolTimeoutError,
    PublishError,
    QueryInputError,
    RetryExhaustedError,
    SerializationError,
    StatementTimeoutError,
    TransactionError,
    TransientError,
    UniqueViolationError,
    UnitOfWorkError,
)
from .events import DomainEvent, EventBus, HasEvents
from .health import HealthCheckResult
from .hooks import current_async_session, current_session, on_commit, on_rollback
from .inbox import Inbox
from .inbox_async import AsyncInbox
from .memory import InMemoryRepository
from .memory_async import AsyncInMemoryRepository
from .outbox import OutboxMessage
from .outbox_relay import OutboxRelay
from .outbox_relay_async import AsyncOutboxRelay
from .pagination import CursorPage, Page
from .publishers import AsyncEventBusPublisher, AsyncPublisher, EventBusPublisher, Publisher
from .query_builder import QueryBuilder
from .repository import Repository
from .repository_async import AsyncRepository
from .retry import RetryPolicy
from .soft_delete import SoftDeleteMixin
from .specs import Spec
from .tables import metadata
from .uow import UnitOfWork
from .uow_async import AsyncUnitOfWork

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
    "AsyncEventBusPublisher",
    "AsyncInMemoryRepository",
    "AsyncInbox",
    "AsyncOutboxRelay",
    "AsyncPublisher",
    "AsyncRedisManager",
    "AsyncRepository",
    "AsyncUnitOfWork",
    "Audited",
    "BulkLoadError",
    "CheckViolationError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionLostError",
    "CursorPage",
    "DalkitError",
    "Database",
    "DatabaseBusyError",
    "DatabaseConfig",
    "DatabaseError",
    "DeadlockError",
    "DomainEvent",
    "EventBus",
    "EventBusPublisher",
    "ForeignKeyViolationError",
    "HasEvents",
    "HealthCheckResult",
    "InMemoryRepository",
    "Inbox",
    "IntegrityError",
    "InvalidCursorError",
    "InvalidFilterError",
    "InvalidQueryError",
    "InvalidSortError",
    "NoActiveTransactionError",
    "NotFoundError",
    "NotNullViolationError",
    "OutboxError",
    "OutboxMessage",
    "OutboxRelay",
    "Page",
    "PoolTimeoutError",
    "PublishError",
    "Publisher",
    "QueryBuilder",
    "QueryInputError",
    "RedisManager",
    "Repository",
    "RetryExhaustedError",
    "RetryPolicy",
    "SerializationError",
    "SoftDeleteMixin",
    "Spec",
    "StatementTimeoutError",
    "TransactionError",
    "TransientError",
    "UniqueViolationError",
    "UnitOfWork",
    "UnitOfWorkError",
    "current_async_session",
    "current_session",
    "metadata",
    "on_commit",
    "on_rollback",
]
