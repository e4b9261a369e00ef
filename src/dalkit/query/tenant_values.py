"""What a statement may write to a tenant-scoped table's ``tenant_id`` inside a tenant: a value
that is provably the current tenant. A plain value, or a bound one, is compared; a SQL
expression (``func.lower(...)``, ``literal_column(...)``, a subquery) has a value only the
database knows, and is refused rather than trusted. Used by the scoping of INSERT, UPDATE and
upserts (`.tenant_writes`, `.tenant_upserts`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import sqlalchemy as sa

from dalkit.query.tenant_context import TenantMismatchError

__all__ = ["parameter_rows", "plain_tenant", "proven", "refuse_tenant"]


def proven(value: Any, current: str, parameters: Any) -> bool:
    """Whether ``value``, what a statement writes to the tenant column, is the current tenant
    (or None, which the column's NOT NULL refuses): a plain value, or a bound one whose value
    (and each execution parameter of its name) is; never a SQL expression.

    Args:
        value: The value as the statement holds it.
        current: The current tenant.
        parameters: The execution's parameters (a mapping, a list of them, or None).
    """
    if isinstance(value, sa.BindParameter):
        if isinstance(value.type, sa.types.TypeDecorator):
            return False  # its type may turn the value into another before it is sent
        rows = parameter_rows(parameters)
        given = [row[value.key] for row in rows if value.key in row]
        if len(given) < len(rows) or not rows:
            given.append(None if value.required else value.effective_value)
        return all(plain_tenant(v, current) for v in given)
    return plain_tenant(value, current)


def plain_tenant(value: Any, current: str) -> bool:
    """Whether ``value`` is a plain value of the current tenant, or None."""
    return value is None or (not isinstance(value, sa.ClauseElement) and str(value) == current)


def parameter_rows(parameters: Any) -> list[Mapping[str, Any]]:
    """The execution's parameters as a list of rows."""
    if isinstance(parameters, Mapping):
        return [parameters] if parameters else []
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        return [p for p in parameters if isinstance(p, Mapping)]
    return []


def refuse_tenant(value: Any, current: str, what: str) -> NoReturn:
    """Raise `TenantMismatchError` for ``value``, written to ``tenant_id`` by ``what``."""
    if isinstance(value, sa.ClauseElement) and not isinstance(value, sa.BindParameter):
        raise TenantMismatchError(
            f"{what} gives tenant_id a SQL expression inside tenant {current!r}, which cannot "
            f"be shown to be {current!r}: give it as a plain value, or leave it out (it is "
            f"stamped with the current tenant)"
        )
    raise TenantMismatchError(
        f"{what} names another tenant for tenant_id inside tenant {current!r}"
    )
