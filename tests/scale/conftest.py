"""Fixtures of the scale-out tests: the replication and PgBouncer harnesses of dalkit.testing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dalkit.testing.pgbouncer import pgbouncer_database_url, pgbouncer_server
from dalkit.testing.replication import (
    ReplicaServer,
    Replication,
    failover_replication,
    replicated_database,
    replication,
)

__all__ = [
    "failover_replication",
    "pgbouncer_database_url",
    "pgbouncer_server",
    "replicated_database",
    "replication",
]


@pytest.fixture
def second_replica(replication: Replication) -> Iterator[ReplicaServer]:
    """Another streaming replica of the session's primary, for the multi-host tests."""
    server = ReplicaServer(replication.primary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
