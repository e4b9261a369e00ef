"""The audit log: which models are audited (:class:`Audited`, :func:`register`), who acts
(:func:`actor`), capture of every change in the same transaction (:mod:`.capture`), and reading
the trail back (:func:`history`, :func:`changes_by`).
"""

from __future__ import annotations

from dalkit.audit.capture import (
    BulkUpdateAudit,
    bulk_update_audit,
    install,
    recording_bulk_update,
    recording_bulk_update_async,
)
from dalkit.audit.registry import (
    REDACTED,
    Audited,
    actor,
    current_actor,
    entity_key,
    entity_type_name,
    register,
)
from dalkit.audit.trail import (
    AuditEntry,
    changes_by,
    changes_by_async,
    changes_by_query,
    history,
    history_async,
    history_query,
)

__all__ = [
    "REDACTED",
    "AuditEntry",
    "Audited",
    "BulkUpdateAudit",
    "actor",
    "bulk_update_audit",
    "changes_by",
    "changes_by_async",
    "changes_by_query",
    "current_actor",
    "entity_key",
    "entity_type_name",
    "history",
    "history_async",
    "history_query",
    "install",
    "recording_bulk_update",
    "recording_bulk_update_async",
    "register",
]
