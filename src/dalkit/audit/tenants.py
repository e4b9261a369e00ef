"""The audit trail inside a tenant: the log is one table for every tenant, so inside
``dalkit.tenant(t)`` the entries of tenant-scoped models are kept only for entities of ``t``.
An entry is ``t``'s when the entity's latest entry up to it that recorded ``tenant_id`` (a create
or a delete records every field) recorded ``t``: a key that another tenant reused after the row
was deleted (a natural key, SQLite's reused highest rowid) shows each tenant its own entries.
When no entry says, the entry is ``t``'s if the entity's row is visible through the session,
which tenant scoping confines to ``t``. Entries of other models pass; under ``every_tenant()``
all pass; outside any tenant, reading the trail of a tenant-scoped model raises
TenantRequiredError, as reading the model does.

The decisions are made here without I/O: `Visibility` says which keys to look up, and the sync
and async trail functions run that one query per model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa

from dalkit.audit.registry import audited_generation, audited_models, model_audit
from dalkit.query.tenant import is_tenant_scoped
from dalkit.query.tenant_context import required, scoping_off

__all__ = ["Visibility"]


class _Entry(Protocol):
    """What is read of an audit entry (`dalkit.audit.AuditEntry`)."""

    @property
    def entity_type(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def changes(self) -> dict[str, Any]: ...


E = TypeVar("E", bound=_Entry)


class Visibility(Generic[E]):
    """Which of ``entries`` the context's tenant may see, and the look-ups that decide it.

    Args:
        entries: Audit entries, of any models.
    """

    def __init__(self, entries: list[E]) -> None:
        self.entries = entries
        self.tenant = None if scoping_off() else _tenant_if_scoped(entries)
        # model -> entity ids to look up (those no entry shows as the tenant's)
        self.lookups: dict[type[Any], set[str]] = {}
        self._seen: set[tuple[str, str]] = set()
        # per entry of a tenant-scoped model: the tenant its entity belonged to then, as the
        # entity's latest entry so far recording one says (a key reused by another tenant, after
        # the first deleted its row, starts a new life with its create); None: unknown
        self._owners: list[str | None] = []
        if self.tenant is None:
            return
        latest: dict[tuple[str, str], str] = {}
        for entry in entries:  # in time order
            model = _scoped_model(entry.entity_type)
            entity = (entry.entity_type, entry.entity_id)
            recorded = None if model is None else _recorded_tenant(entry.changes)
            if recorded is not None:
                latest[entity] = recorded
            owner = latest.get(entity)
            self._owners.append(owner)
            if owner is None and model is not None and _single_key(model):
                self.lookups.setdefault(model, set()).add(entry.entity_id)

    def queries(self) -> list[tuple[type[Any], sa.Select[Any]]]:
        """One select per model of the entity ids among those to look up that are visible:
        run through the session, tenant scoping confines it to the tenant's rows."""
        found = []
        for model, ids in self.lookups.items():
            column = sa.inspect(model).primary_key[0]
            text = sa.cast(column, sa.String)
            found.append((model, sa.select(text).where(text.in_(sorted(ids)))))
        return found

    def found(self, model: type[Any], ids: Iterable[Any]) -> None:
        """Note the entity ids a look-up of ``model`` found."""
        name = model_audit(model).name  # type: ignore[union-attr]
        self._seen.update((name, str(i)) for i in ids)

    def visible(self) -> list[E]:
        """The entries the tenant may see, in their order: of a model that is not
        tenant-scoped, of an entity the tenant then held, or of one whose tenant no entry
        recorded and that the tenant holds now."""
        if self.tenant is None:
            return self.entries
        return [
            entry
            for entry, owner in zip(self.entries, self._owners, strict=True)
            if owner == self.tenant
            or (
                owner is None
                and (
                    _scoped_model(entry.entity_type) is None
                    or (entry.entity_type, entry.entity_id) in self._seen
                )
            )
        ]


def _single_key(model: type[Any]) -> bool:
    config = model_audit(model)
    return config is not None and len(config.primary_key) == 1


def _tenant_if_scoped(entries: list[E]) -> str | None:
    if not any(_scoped_model(entry.entity_type) is not None for entry in entries):
        return None
    return required("reading the audit trail")


def _recorded_tenant(changes: Any) -> str | None:
    value = changes.get("tenant_id") if isinstance(changes, dict) else None
    if isinstance(value, dict):  # an update's {"old": ..., "new": ...}
        value = value.get("new")
    return None if value is None else str(value)


# (name in the log, audited generation) -> its model when tenant-scoped, else None
_SCOPED: dict[tuple[str, int], type[Any] | None] = {}


def _scoped_model(name: str) -> type[Any] | None:
    """The tenant-scoped audited model the log names ``name``; None for any other."""
    key = (name, audited_generation())
    if key not in _SCOPED:
        found = None
        for cls in audited_models():
            config = model_audit(cls)
            if config is not None and config.name == name:
                found = cls if is_tenant_scoped(cls) else None
                break
        _SCOPED[key] = found
    return _SCOPED[key]
