"""The audit log: which models are audited (`Audited`, `register()`), who acts
(`actor()`), capture of every change in the same transaction (`.capture`), refusal of the
writes it cannot record (`.guard`, `unaudited()`), and reading the trail back (`history()`,
`changes_by()`).
"""

from __future__ import annotations

from dalkit.audit.bulk import ChunkAudit
from dalkit.audit.capture import (
    BulkInsertAudit,
    BulkUpdateAudit,
    bulk_insert_audit,
    bulk_update_audit,
    install,
    recording_bulk_insert,
    recording_bulk_insert_async,
    recording_bulk_update,
    recording_bulk_update_async,
)
from dalkit.audit.errors import AuditActorError, UnauditedWriteError
from dalkit.audit.guard import unaudited
from dalkit.audit.raw import check_raw_write
from dalkit.audit.registry import (
    ACTOR_TEXT_MAX,
    ENTITY_KEY_MAX,
    REDACTED,
    Audited,
    actor,
    current_actor,
    entity_key,
    entity_type_name,
    refused_actor,
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
    "ACTOR_TEXT_MAX",
    "ENTITY_KEY_MAX",
    "REDACTED",
    "AuditActorError",
    "AuditEntry",
    "Audited",
    "BulkInsertAudit",
    "BulkUpdateAudit",
    "ChunkAudit",
    "UnauditedWriteError",
    "actor",
    "bulk_insert_audit",
    "bulk_update_audit",
    "check_raw_write",
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
    "recording_bulk_insert",
    "recording_bulk_insert_async",
    "recording_bulk_update",
    "recording_bulk_update_async",
    "refused_actor",
    "register",
    "unaudited",
]
