"""The tenant of the context: `tenant()` and `every_tenant()` (a context variable each thread
and task keeps its own), and the errors tenant scoping raises. The scoping itself is
`dalkit.query.tenant`; this module is what it and its statement guard (`.tenant_guard`) share.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from dalkit.errors import DalkitError

__all__ = [
    "TenantError",
    "TenantMismatchError",
    "TenantRequiredError",
    "UnscopedStatementError",
    "current_tenant",
    "every_tenant",
    "required",
    "scoping_off",
    "tenant",
]


class TenantError(DalkitError):
    """A read or write of a tenant-scoped model that tenant scoping forbids."""


class TenantRequiredError(TenantError):
    """Raised for a read or write of a tenant-scoped model outside ``dalkit.tenant(...)``."""


class TenantMismatchError(TenantError):
    """Raised for a write that names, or would touch, a row of another tenant."""


class UnscopedStatementError(TenantError):
    """Raised for a statement that reads or writes a tenant-scoped table inside
    ``dalkit.tenant(...)`` by a path tenant scoping cannot scope (raw SQL, a Core statement on
    a connection, the Session's legacy bulk methods)."""


_EVERY = object()  # every_tenant(): scoping is off, explicitly
_current: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "dalkit_tenant", default=None
)


@contextlib.contextmanager
def tenant(tenant_id: object) -> Iterator[None]:
    """Scope the block to ``tenant_id`` (a context variable: each thread and task keeps its
    own): reads of `TenantScoped` models see its rows only, new rows get it.

    Args:
        tenant_id: The tenant, as a non-empty string or number.

    Yields:
        Nothing: the scope lasts for the with-block.

    Raises:
        TenantRequiredError: When ``tenant_id`` is None, empty or a bool.

    Examples:
        ```python
        with dalkit.tenant("acme"), db.session() as session:
            session.add(Invoice(number=1))  # tenant_id="acme"
        ```
    """
    if tenant_id is None or tenant_id == "" or isinstance(tenant_id, bool):
        raise TenantRequiredError(f"a tenant id is required, got {tenant_id!r}")
    token = _current.set(str(tenant_id))
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def every_tenant() -> Iterator[None]:
    """Turn scoping off in the block, on purpose (administration, migrations, reports): reads
    see every tenant's rows, writes keep the tenant ids they name, and raw SQL and Core
    statements on a connection run as they are.

    Yields:
        Nothing: scoping stays off for the with-block.

    Examples:
        ```python
        with every_tenant(), db.session() as session:
            total = session.scalar(select(func.count()).select_from(Invoice))
        ```
    """
    token = _current.set(_EVERY)
    try:
        yield
    finally:
        _current.reset(token)


def scoping_off() -> bool:
    """Whether the context is inside `every_tenant()`."""
    return _current.get() is _EVERY


def current_tenant() -> str | None:
    """The tenant of the context.

    Returns:
        The tenant id as text; None outside `tenant()`, and inside `every_tenant()`.
    """
    value = _current.get()
    return value if isinstance(value, str) else None


def required(what: str) -> str | None:
    """The current tenant; None under every_tenant(); raises outside any tenant."""
    value = _current.get()
    if value is _EVERY:
        return None
    if not isinstance(value, str):
        raise TenantRequiredError(
            f"{what} of a tenant-scoped model outside `with dalkit.tenant(...)`: refused rather "
            "than reading or writing every tenant's rows (use dalkit.query.tenant.every_tenant() "
            "to mean every tenant)"
        )
    return value
