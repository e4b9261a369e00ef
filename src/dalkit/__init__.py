"""dalkit: a typed, tested data-access layer on SQLAlchemy 2.x: instrumented pools, health checks
and one error tree, for sync and async code alike."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dalkit.audit import Audited
from dalkit.config import DatabaseConfig
from dalkit.database import Database
from dalkit.engine.health import HealthCheckResult
from dalkit.errors import (
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
    EventLoopError,
    ForeignKeyViolationError,
    IntegrityError,
    InvalidCursorError,
    InvalidFilterError,
    InvalidQueryError,
    InvalidSortError,
    LockNotAvailableError,
    NoActiveTransactionError,
    NotFoundError,
    NotNullViolationError,
    OutboxError,
    PoolTimeoutError,
    PublishError,
    QueryInputError,
    ReadOnlyTransactionError,
    RetryExhaustedError,
    SerializationError,
    StatementTimeoutError,
    TransactionAbortedError,
    TransactionError,
    TransactionUsageError,
    TransientError,
    UniqueViolationError,
    UnitOfWorkError,
)
from dalkit.observe.errors import (
    NPlusOneError,
    NPlusOneWarning,
    QueryBudgetExceededError,
    UnusedEagerLoadWarning,
)
from dalkit.outbox.events import DomainEvent, EventBus, HasEvents
from dalkit.outbox.inbox import Inbox
from dalkit.outbox.messages import OutboxMessage
from dalkit.outbox.publishers import (
    AsyncEventBusPublisher,
    AsyncPublisher,
    EventBusPublisher,
    Publisher,
)
from dalkit.outbox.relay import OutboxRelay
from dalkit.query.builder import QueryBuilder
from dalkit.query.errors import InputTooLongError
from dalkit.query.pagination import CursorPage, Page
from dalkit.query.soft_delete import SoftDeleteMixin
from dalkit.query.specs import Spec
from dalkit.query.tenant import TenantScoped, tenant
from dalkit.repository.abstract import AbstractRepository
from dalkit.repository.abstract_async import AsyncAbstractRepository
from dalkit.repository.memory import InMemoryRepository
from dalkit.repository.memory_async import AsyncInMemoryRepository
from dalkit.repository.sql import Repository
from dalkit.tables import metadata
from dalkit.transaction.retry import RetryPolicy
from dalkit.transaction.scope import current_async_session, current_session, on_commit, on_rollback
from dalkit.uow.memory import AsyncInMemoryUnitOfWork, InMemoryUnitOfWork
from dalkit.uow.unit import UnitOfWork

if TYPE_CHECKING:
    from dalkit.database_async import AsyncDatabase
    from dalkit.outbox.inbox_async import AsyncInbox
    from dalkit.outbox.relay_async import AsyncOutboxRelay
    from dalkit.redis.manager import RedisManager
    from dalkit.redis.manager_async import AsyncRedisManager
    from dalkit.repository.sql_async import AsyncRepository
    from dalkit.uow.unit_async import AsyncUnitOfWork

# name -> module: imported on first use, so that importing dalkit never needs an extra
_LAZY = {
    # the async API needs greenlet (the async extras): a core install imports without it
    "AsyncDatabase": "dalkit.database_async",
    "AsyncInbox": "dalkit.outbox.inbox_async",
    "AsyncOutboxRelay": "dalkit.outbox.relay_async",
    "AsyncRepository": "dalkit.repository.sql_async",
    "AsyncUnitOfWork": "dalkit.uow.unit_async",
    # redis-py is an extra too
    "AsyncRedisManager": "dalkit.redis.manager_async",
    "RedisManager": "dalkit.redis.manager",
}


# Mixins keep the module they are defined in: SQLAlchemy and dataclasses evaluate the string
# annotations of a class in its module's namespace.
_DEFINING_MODULE_KEPT = frozenset({"Audited", "HasEvents", "SoftDeleteMixin", "TenantScoped"})


def _public(obj: Any, name: str) -> Any:
    """Report an exported class as ``dalkit.Name``: the name users import, in reprs,
    tracebacks and documentation, rather than the private module it happens to live in."""
    if isinstance(obj, type) and name not in _DEFINING_MODULE_KEPT:
        obj.__module__ = __name__
    return obj


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        if "redis" in module:
            hint = "redis-py: pip install 'dalkit[redis]'"
        else:
            hint = "greenlet: pip install 'dalkit[postgres]' or 'dalkit[sqlite-async]'"
        raise ConfigurationError(f"dalkit.{name} needs {hint}") from exc
    return _public(getattr(loaded, name), name)


__all__ = [
    "AbstractRepository",
    "AsyncAbstractRepository",
    "AsyncDatabase",
    "AsyncEventBusPublisher",
    "AsyncInMemoryRepository",
    "AsyncInMemoryUnitOfWork",
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
    "EventLoopError",
    "ForeignKeyViolationError",
    "HasEvents",
    "HealthCheckResult",
    "InMemoryRepository",
    "InMemoryUnitOfWork",
    "Inbox",
    "InputTooLongError",
    "IntegrityError",
    "InvalidCursorError",
    "InvalidFilterError",
    "InvalidQueryError",
    "InvalidSortError",
    "LockNotAvailableError",
    "NPlusOneError",
    "NPlusOneWarning",
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
    "QueryBudgetExceededError",
    "QueryBuilder",
    "QueryInputError",
    "ReadOnlyTransactionError",
    "RedisManager",
    "Repository",
    "RetryExhaustedError",
    "RetryPolicy",
    "SerializationError",
    "SoftDeleteMixin",
    "Spec",
    "StatementTimeoutError",
    "TenantScoped",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionUsageError",
    "TransientError",
    "UniqueViolationError",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnusedEagerLoadWarning",
    "current_async_session",
    "current_session",
    "metadata",
    "on_commit",
    "on_rollback",
    "tenant",
]

for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name], _name)
del _name
