"""Errors of the web integrations, part of dalkit's tree under TransactionError."""

from __future__ import annotations

from dalkit.errors import TransactionError

__all__ = ["RequestCommitError", "ResponseStartedError"]


class ResponseStartedError(TransactionError):
    """Raised when code uses a request's session after its transaction ended, which happens
    when the response starts: the data was committed (or rolled back) before the first byte;
    also when a task or thread the request started, and did not await, uses it while it ends."""


class RequestCommitError(TransactionError):
    """Raised into the application when its request's transaction failed to commit as the
    response started; the client was sent a 500 instead of the application's response."""
