"""What the PostgreSQL server sees of a test's connections (pg_stat_activity)."""

from __future__ import annotations

from dalkit import Database


def server_connections(postgres_url: str, name: str) -> int:
    """The server's connections whose application_name is ``name``."""
    with Database(postgres_url, pool_size=1, query_stats=False) as admin:
        rows = admin.sql(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = :name",
            name=name,
        )
    return int(rows[0]["n"])
