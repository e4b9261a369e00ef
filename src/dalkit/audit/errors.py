"""The audit package's errors: a write to an audited model that cannot be recorded is refused,
never let through silently."""

from __future__ import annotations

from dalkit.errors import DalkitError

__all__ = ["AuditActorError", "UnauditedWriteError"]


class UnauditedWriteError(DalkitError):
    """Raised for a write to an audited model through a path whose changes cannot be recorded
    (raw SQL, an INSERT whose rows cannot be found again); nothing was written."""


class AuditActorError(DalkitError, ValueError):
    """Raised by `dalkit.audit.actor()` for an actor or request id longer than the audit log
    keeps (`ACTOR_TEXT_MAX` characters): refused when the block starts, rather than failing
    each audited write of the block at its flush."""
