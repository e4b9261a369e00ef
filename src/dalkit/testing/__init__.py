"""dalkit's test harness: throwaway PostgreSQL and Redis servers, and query counting.

The pytest fixtures live in ``dalkit.testing.plugin``, loaded through the ``pytest11`` entry point.
"""

from __future__ import annotations

from dalkit.testing._server import ServerStartError
from dalkit.testing.postgres import PostgresServer
from dalkit.testing.queries import QueryCounter, assert_max_queries, count_queries
from dalkit.testing.redis import RedisServer

__all__ = [
    "PostgresServer",
    "QueryCounter",
    "RedisServer",
    "ServerStartError",
    "assert_max_queries",
    "count_queries",
]
