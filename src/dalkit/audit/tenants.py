"""The audit trail inside a tenant: the log is one table for every tenant, so inside
``dalkit.tenant(t)`` the entries of tenant-scoped models are kept only for entities of ``t``.
An entry is ``t``'s when the entity's latest entry up to it that recorded ``tenant_id`` (a create
or a delete records every field) recorded ``t``: a key that another tenant reused after the row
was deleted (a natural key, SQLite's reused highest rowid) shows each tenant its own entries.
When no entry read says (``changes_by`` of an editor, whose updates record no tenant), the latest
create of the entity before the entry, read from the log, does; when none does either, the entry
is ``t``'s if the entity's row is visible through the session, which tenant scoping confines to
``t``. Entries of other models pass; under ``every_tenant()``
all pass; outside any tenant, reading the trail of a tenant-scoped model raises
TenantRequiredError, as reading the model does.

The decisions are made here without I/O: `Visibility` says what to read (the creates of the
log that tell the tenant of an entry no entry read does, then the keys to look up), and the sync
and async trail functions run those queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa

from dalkit.audit.registry import audited_generation, audited_models, model_audit
from dalkit.query.tenant import is_tenant_scoped
from dalkit.query.tenant_context import required, scoping_off
from dalkit.tables import audit_log

__all__ = ["Visibility"]


class _Entry(Protocol):
    """What is read of an audit entry (`dalkit.audit.AuditEntry`)."""

    @property
    def id(self) -> int: ...
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
            self._owners.append(latest.get(entity))

    def _unknown(self) -> list[int]:
        """The positions of the entries of tenant-scoped models whose tenant is not known."""
        if self.tenant is None:
            return []
        return [
            i
            for i, (entry, owner) in enumerate(zip(self.entries, self._owners, strict=True))
            if owner is None and _scoped_model(entry.entity_type) is not None
        ]

    def creations(self) -> sa.Select[Any] | None:
        """The log's creates of the entities whose entries' tenant is not known (an update
        whose entity's create is not among them: ``changes_by`` of an editor), made before the
        last of those entries; None when there are none. Give its rows to `created`."""
        unknown = [self.entries[i] for i in self._unknown()]
        if not unknown:
            return None
        c = audit_log.c
        return (
            sa.select(c.id, c.entity_type, c.entity_id, c.changes)
            .where(
                c.action == "create",
                c.entity_type.in_(sorted({e.entity_type for e in unknown})),
                c.entity_id.in_(sorted({e.entity_id for e in unknown})),
                c.id < max(e.id for e in unknown),
            )
            .order_by(c.id)
        )

    def created(self, rows: Iterable[Any]) -> None:
        """Note the creates `creations` found: an entry's tenant is that of the latest create of
        its entity before it."""
        creates: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
        for row in rows:
            tenant = _recorded_tenant(row.changes)
            creates.setdefault((row.entity_type, row.entity_id), []).append((row.id, tenant))
        for i in self._unknown():
            entry = self.entries[i]
            before = [
                t
                for key, t in creates.get((entry.entity_type, entry.entity_id), ())
                if key < entry.id
            ]
            self._owners[i] = before[-1] if before else None

    def queries(self) -> list[tuple[type[Any], sa.Select[Any]]]:
        """One select per model of the entity ids among those to look up that are visible:
        run through the session, tenant scoping confines it to the tenant's rows (the entries
        whose tenant neither they nor `created` tell)."""
        lookups: dict[type[Any], set[str]] = {}
        for i in self._unknown():
            entry = self.entries[i]
            model = _scoped_model(entry.entity_type)
            if model is not None and _single_key(model):
                lookups.setdefault(model, set()).add(entry.entity_id)
        found = []
        for model, ids in lookups.items():
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
