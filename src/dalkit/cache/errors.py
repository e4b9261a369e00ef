"""The cache's own errors: what it refuses to cache (a statement, a memoized call), and a cache
bound to the wrong database."""

from __future__ import annotations

from dalkit.errors import ConfigurationError, DalkitError

__all__ = [
    "CacheError",
    "CacheConfigurationError",
    "UncacheableCallError",
    "UncacheableStatementError",
]


class CacheError(DalkitError):
    """Base class of the query cache's errors."""


class UncacheableStatementError(CacheError):
    """Raised by ``cached()`` for a statement whose tables cannot be known (a text statement
    without ``tables=[...]``) or that is not a read."""


class UncacheableCallError(CacheError):
    """Raised by a ``memoize``d function called with an argument that has no value to key the
    call by: an object whose repr is its memory address (a session, a function, an instance of
    a class without ``__repr__``), or a container holding itself."""


class CacheConfigurationError(CacheError, ConfigurationError):
    """Raised when a cache is set up wrongly: an async backend on a sync database, a cache
    bound twice, a non-positive TTL or size."""
