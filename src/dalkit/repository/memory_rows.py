"""The rules the in-memory repositories keep over their rows, as the databases and the scoped
session keep them for the SQL repositories: NOT NULL and unique constraints, and the tenant
scope of a `TenantScoped` model (inside ``tenant(t)`` reads and writes reach ``t``'s rows only
and new rows are stamped with ``t``; outside any tenant they are refused). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from dalkit.errors import NotNullViolationError, UniqueViolationError
from dalkit.query.fields import ModelInfo
from dalkit.query.tenant import is_tenant_scoped
from dalkit.query.tenant_context import TenantMismatchError, required
from dalkit.repository.writes import unique_sets

__all__ = ["TenantScope", "check_constraints"]

T = TypeVar("T")
_COLUMN = "tenant_id"


def check_constraints(info: ModelInfo, rows: Iterable[Any], entity: Any) -> None:
    """Refuse ``entity`` when it breaks a NOT NULL or unique constraint among ``rows``.

    Args:
        info: The model.
        rows: Every stored row (of every tenant: a unique constraint spans them all).
        entity: The entity stored or changed.
    """
    for field in info.fields.values():
        if not field.nullable and getattr(entity, field.name) is None:
            if field in info.primary_key and len(info.primary_key) == 1:
                continue  # assigned on store
            raise NotNullViolationError(f"{info.name}.{field.name} cannot be null")
    pk = frozenset(f.name for f in info.primary_key)
    others = [other for other in rows if other is not entity]
    for names in unique_sets(info):
        if names == pk:
            continue
        values = tuple(getattr(entity, n) for n in sorted(names))
        if None in values:
            continue  # NULLs never clash in a unique constraint
        for other in others:
            if tuple(getattr(other, n) for n in sorted(names)) == values:
                raise UniqueViolationError(
                    f"duplicate value for unique ({', '.join(sorted(names))}) of {info.name}"
                )


class TenantScope:
    """The current tenant's reach over one model's rows (everything for a model not scoped)."""

    def __init__(self, model: type[Any]) -> None:
        self.scoped = is_tenant_scoped(model)

    def current(self, what: str) -> str | None:
        """The tenant whose rows ``what`` reaches; None: every row (no scope, or
        ``every_tenant()``). Raises TenantRequiredError outside any tenant."""
        return required(what) if self.scoped else None

    def rows(self, rows: Iterable[T]) -> list[T]:
        """The rows a read reaches.

        Args:
            rows: Every stored row.

        Returns:
            Those of the current tenant.
        """
        current = self.current("a read")
        return list(rows) if current is None else [r for r in rows if _of(r) == current]

    def reaches(self, entity: Any) -> bool:
        """Whether a read of ``entity``'s row finds it.

        Args:
            entity: A stored entity.

        Returns:
            True when it is the current tenant's.
        """
        current = self.current("a read")
        return current is None or _of(entity) == current

    def stamp(self, entity: Any) -> None:
        """Give a new ``entity`` the current tenant, or refuse one naming another.

        Args:
            entity: The entity to insert.
        """
        current = self.current("a write")
        if current is None:
            return
        given = getattr(entity, _COLUMN)
        if given is None:
            setattr(entity, _COLUMN, current)
        elif str(given) != current:
            raise TenantMismatchError(f"a row names tenant {given!r} inside tenant {current!r}")

    def check_change(self, entity: Any, values: Mapping[str, Any]) -> None:
        """Refuse a write that meets ``entity``'s row of another tenant, or that gives it
        another tenant (``values``).

        Args:
            entity: The stored entity the write meets.
            values: The values it sets.
        """
        current = self.current("a write")
        if current is None:
            return
        if _of(entity) != current:
            raise TenantMismatchError(f"a row of tenant {_of(entity)!r} inside tenant {current!r}")
        given = values.get(_COLUMN, current)
        if given is not None and str(given) != current:
            raise TenantMismatchError(f"a write names tenant {given!r} inside tenant {current!r}")


def _of(entity: Any) -> str | None:
    value = getattr(entity, _COLUMN)
    return None if value is None else str(value)
