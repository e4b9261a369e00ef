"""Opening a SQLite file switches it to WAL even while another connection writes to it: SQLite
refuses that switch at once, past its busy timeout, so connections opening a fresh file together
(two `dalkit migrate up` runs, a web app's first requests) would fail with "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database, DatabaseBusyError


@pytest.fixture
def rollback_journal_file(tmp_path: Path) -> Path:
    """A database file in SQLite's default journal mode, as another program would create it."""
    path = tmp_path / "fresh.db"
    with sqlite3.connect(path) as creator:
        creator.execute("CREATE TABLE notes (body TEXT)")
    creator.close()
    return path


def _writer(path: Path) -> sqlite3.Connection:
    """A connection in the middle of a write transaction: it holds the RESERVED lock."""
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO notes VALUES ('written while dalkit connects')")
    return writer


@pytest.fixture
def writer_committing_soon(rollback_journal_file: Path) -> Iterator[Path]:
    writer = _writer(rollback_journal_file)
    commit = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    commit.start()
    yield rollback_journal_file
    commit.join()
    writer.close()


def test_the_switch_to_wal_alone_would_fail_at_once_under_a_writer(
    writer_committing_soon: Path,
) -> None:
    # the SQLite behaviour the connect hook works around: a write waits out the writer (it
    # commits after 0.3 s, well inside the 5 s busy timeout), the switch to WAL does not
    other = sqlite3.connect(writer_committing_soon, timeout=5, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        other.execute("PRAGMA journal_mode=WAL")
    other.execute("INSERT INTO notes VALUES ('waited for the writer')")
    assert other.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    other.close()


def test_a_connection_opened_while_another_writes_waits_and_switches_to_wal(
    writer_committing_soon: Path,
) -> None:
    with Database(f"sqlite:///{writer_committing_soon}") as db, db.connection() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.execute(sa.text("SELECT count(*) FROM notes")).scalar() == 1


async def test_an_async_connection_opened_while_another_writes_switches_to_wal(
    writer_committing_soon: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{writer_committing_soon}"
    async with AsyncDatabase(url) as db, db.connection() as connection:
        assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await connection.execute(sa.text("SELECT count(*) FROM notes"))).scalar() == 1


def test_a_writer_holding_on_past_the_busy_timeout_fails_the_connect_as_busy(
    rollback_journal_file: Path,
) -> None:
    # the writer never ends: the connect gives up after the busy timeout instead of waiting
    writer = _writer(rollback_journal_file)
    try:
        with Database(f"sqlite:///{rollback_journal_file}", sqlite_busy_timeout_ms=200) as db:
            with pytest.raises(DatabaseBusyError, match="database is locked"), db.connection():
                pass
    finally:
        writer.close()


def test_four_databases_opening_each_fresh_file_together_all_connect(tmp_path: Path) -> None:
    # before the hook retried, about 1 connection in 70 failed here
    failures: list[BaseException] = []
    for number in range(40):
        url = f"sqlite:///{tmp_path / f'race-{number}.db'}"
        databases = [Database(url) for _ in range(4)]
        barrier = threading.Barrier(len(databases))

        def connect(db: Database, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with db.connection() as connection:
                    connection.execute(sa.text("SELECT 1"))
            except BaseException as exc:  # collected, then reported by the assert
                failures.append(exc)

        threads = [threading.Thread(target=connect, args=(db,)) for db in databases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for db in databases:
            db.dispose()
    assert failures == []
