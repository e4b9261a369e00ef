"""The replication harness itself: a test replica that was down while the primary moved on
and checkpointed still catches up (its slot kept the WAL it had not received)."""

from __future__ import annotations

import psycopg
import pytest

from dalkit.testing.replication import Replication, current_lsn


@pytest.mark.slow
def test_a_replica_shut_down_across_wal_switches_and_a_checkpoint_catches_up(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    # without a slot, the checkpoint removes the segments the replica still needs and it
    # never replays again ("requested WAL segment ... has already been removed")
    primary, _ = replicated_database
    replication.replica.shutdown()
    with psycopg.connect(primary, autocommit=True) as connection:
        connection.execute("CREATE TABLE harness_moves (n int)")
        for _ in range(3):
            connection.execute("INSERT INTO harness_moves VALUES (1)")
            connection.execute("SELECT pg_switch_wal()")
        connection.execute("CHECKPOINT")
    replication.replica.start_again()
    replication.replica.wait_for(current_lsn(replication.primary.url))
    with psycopg.connect(replication.replica.url_for(primary.rsplit("/", 1)[1])) as replica:
        row = replica.execute("SELECT count(*) FROM harness_moves").fetchone()
    assert row == (3,)
