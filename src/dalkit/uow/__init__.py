"""The unit of work: one session and one transaction, repositories, hooks, and domain events
handed to the event bus or the outbox at commit."""

from __future__ import annotations

from dalkit.uow.base import UnitOfWorkHooks, UnitOfWorkSettings, uow_settings
from dalkit.uow.memory import AsyncInMemoryUnitOfWork, InMemoryUnitOfWork
from dalkit.uow.unit import UnitOfWork
from dalkit.uow.unit_async import AsyncUnitOfWork

__all__ = [
    "AsyncInMemoryUnitOfWork",
    "AsyncUnitOfWork",
    "InMemoryUnitOfWork",
    "UnitOfWork",
    "UnitOfWorkHooks",
    "UnitOfWorkSettings",
    "uow_settings",
]
