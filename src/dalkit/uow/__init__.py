"""The unit of work: one session and one transaction, repositories, hooks, and domain events
handed to the event bus or the outbox at commit."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dalkit.uow.base import UnitOfWorkHooks, UnitOfWorkSettings, uow_settings
from dalkit.uow.memory import AsyncInMemoryUnitOfWork, InMemoryUnitOfWork
from dalkit.uow.unit import UnitOfWork

if TYPE_CHECKING:
    from dalkit.uow.unit_async import AsyncUnitOfWork


# the async classes need greenlet (the async extras): imported on first use
_ASYNC = {"AsyncUnitOfWork": "dalkit.uow.unit_async"}


def __getattr__(name: str) -> Any:
    module = _ASYNC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncInMemoryUnitOfWork",
    "AsyncUnitOfWork",
    "InMemoryUnitOfWork",
    "UnitOfWork",
    "UnitOfWorkHooks",
    "UnitOfWorkSettings",
    "uow_settings",
]
