"""The relay processes of the crash test, forked by ``python -m tests.uow.relay_worker``.

That process (the zygote) imports dalkit once, then forks a relay for each database URL it
reads on stdin and writes back the relay's pid; it ends at the end of its stdin (the test's
process gone included). Each relay relays the outbox to a consumer with an Inbox, logging every
delivery (duplicates included) in ``crash_deliveries`` and every handler run in
``crash_handled``; it stops on SIGTERM, or when the zygote is gone, so that none outlives a test
that was killed. The test kills relays with SIGKILL at random moments.
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


def zygote() -> None:
    """Fork a relay for each URL read on stdin, writing its pid on stdout, until stdin ends.

    A relay started as a process of its own imported dalkit first, ~0.8 s of CPU and several
    seconds on a loaded machine, and the test restarts one after each of its ~20 kills: the
    relays spent most of the test starting (20 messages sent a second while it killed them,
    110 undisturbed). A forked relay starts at once, with no connection of the zygote's (it
    opens none) and a fresh random state (Python reseeds it after a fork).
    """
    # the kernel reaps the relays as they die: a SIGKILLed one leaves no zombie, and the test
    # sees it gone once its pid is
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    me = os.getpid()
    while url := sys.stdin.readline().strip():
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)  # the zygote's pipes stay the test's and the zygote's
            os.dup2(devnull, 1)
            code = 1
            try:
                main(url, me)
                code = 0
            finally:
                os._exit(code)  # never back into the zygote's loop
        print(pid, flush=True)


if __name__ == "__main__":
    zygote()
