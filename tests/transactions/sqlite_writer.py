"""One writer process of test_sqlite_processes: waits for "go" on stdin, then writes through
@db.transactional and prints its transaction statistics as JSON.

Usage: python sqlite_writer.py URL WORKER WRITES
"""

from __future__ import annotations

import json
import sys

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import Database


def main(url: str, worker: int, writes: int) -> None:
    db = Database(url)

    @db.transactional
    def write(seq: int, session: Session) -> None:
        session.execute(
            sa.text("INSERT INTO writes (worker, seq) VALUES (:worker, :seq)"),
            {"worker": worker, "seq": seq},
        )
        # read-modify-write in Python: only a serialized writer keeps every increment
        count = session.scalar(sa.text("SELECT n FROM counter"))
        session.execute(sa.text("UPDATE counter SET n = :n"), {"n": int(count or 0) + 1})

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    for seq in range(writes):
        write(seq)  # a second parameter session is filled in after the first argument
    print(json.dumps(db.transaction_stats()), flush=True)
    db.dispose()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
