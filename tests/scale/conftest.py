"""Fixtures of the scale-out tests: the replication and PgBouncer harnesses of dalkit.testing."""

from __future__ import annotations

from dalkit.testing.pgbouncer import pgbouncer_database_url, pgbouncer_server
from dalkit.testing.replication import failover_replication, replicated_database, replication

__all__ = [
    "failover_replication",
    "pgbouncer_database_url",
    "pgbouncer_server",
    "replicated_database",
    "replication",
]
