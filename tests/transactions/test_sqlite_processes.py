"""Four processes write one SQLite file at once through @transactional: BEGIN IMMEDIATE makes
them queue for the write lock, so no "database is locked" escapes and every write lands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from dalkit import Database

PROCESSES = 4
WRITES = 100
WRITER = Path(__file__).with_name("sqlite_writer.py")


def test_four_processes_writing_one_sqlite_file_lose_nothing(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        with db.transaction() as session:
            session.execute(sa.text("CREATE TABLE writes (worker INTEGER, seq INTEGER)"))
            session.execute(sa.text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            session.execute(sa.text("INSERT INTO counter (n) VALUES (0)"))

        writers = [
            subprocess.Popen(
                [sys.executable, str(WRITER), sqlite_url, str(worker), str(WRITES)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for worker in range(PROCESSES)
        ]
        for writer in writers:  # every process imported dalkit and opened the file
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
        outputs = [writer.communicate("go\n", timeout=120) for writer in writers]

        for writer, (_, stderr) in zip(writers, outputs, strict=True):
            assert "database is locked" not in stderr
            assert writer.returncode == 0, stderr
        retries = sum(json.loads(stdout)["retries"] for stdout, _ in outputs)
        with db.transaction(read_only=True) as session:
            landed = set(session.execute(sa.text("SELECT worker, seq FROM writes")).all())
            counter = session.scalar(sa.text("SELECT n FROM counter"))
        print(
            f"\nsqlite ({PROCESSES} processes): {len(landed)} writes landed, counter {counter}, "
            f"{retries} retries"
        )
        assert landed == {(w, s) for w in range(PROCESSES) for s in range(WRITES)}
        assert counter == PROCESSES * WRITES
    finally:
        db.dispose()
