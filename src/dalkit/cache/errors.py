"""The cache's own errors: what it refuses to cache, and a cache bound to the wrong database."""

from __future__ import annotations

from dalkit.errors import ConfigurationError, DalkitError

__all__ = ["CacheError", "CacheConfigurationError", "UncacheableStatementError"]


class CacheError(DalkitError):
    """Base class of the query cache's errors."""


class UncacheableStatementError(CacheError):
    """Raised by ``cached()`` for a statement whose tables cannot be known (a text statement
    without ``tables=[...]``) or that is not a read."""


class CacheConfigurationError(CacheError, ConfigurationError):
    """Raised when a cache is set up wrongly: an async backend on a sync database, a cache
    bound twice, a non-positive TTL or size."""
