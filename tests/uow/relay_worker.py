"""One relay process of the crash test: ``python -m tests.uow.relay_worker URL PARENT_PID``.

Relays the outbox to a consumer with an Inbox, logging every delivery (duplicates included)
in ``crash_deliveries`` and every handler run in ``crash_handled``; stops on SIGTERM, or when
the test's process (PARENT_PID) is gone, so that none outlives a test that was killed. The test
kills it with SIGKILL at random moments.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import sqlalchemy as sa

from dalkit import Database, Inbox, OutboxMessage, OutboxRelay

crash_metadata = sa.MetaData()
deliveries = sa.Table(
    "crash_deliveries",
    crash_metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
)
handled = sa.Table(
    "crash_handled",
    crash_metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    # no unique constraint: only the inbox stands between a duplicate and a second run
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("aggregate_key", sa.String(400), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)


class InboxConsumer:
    """A publisher standing for a remote consumer: its own database connections and inbox."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.inbox = Inbox(db, consumer="crash-test")

    def publish(self, message: OutboxMessage) -> None:
        row = {
            "event_id": message.event_id,
            "aggregate_key": message.aggregate_key,
            "seq": message.payload["amount"],
        }
        with self.db.transaction() as session:
            # every delivery is logged, duplicates included; the handler runs on the first only
            session.execute(deliveries.insert(), {"event_id": message.event_id})
            if self.inbox.claim(session, message.event_id):
                session.execute(handled.insert(), row)


def main(url: str, parent: int) -> None:
    relay_db = Database(url)
    # the consumer must not share the relay's Database: db.transaction() would join the
    # relay's claiming transaction instead of committing on its own
    consumer_db = Database(url)
    relay = OutboxRelay(relay_db, InboxConsumer(consumer_db), batch_size=50, poll_interval=0.02)

    def stop(signum: int, frame: FrameType | None) -> None:
        relay.stop()

    def stop_orphaned(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != parent:
            relay.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop_orphaned)
    signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
    try:
        relay.run_forever()
    finally:
        relay_db.dispose()
        consumer_db.dispose()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
