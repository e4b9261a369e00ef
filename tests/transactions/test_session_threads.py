"""db.session() is the transaction runner's scope, so on SQLite a read-modify-write inside it
takes the write lock up front (BEGIN IMMEDIATE) instead of failing when it upgrades."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from dalkit import Database

from .models import Counter, create_all

THREADS = 8
ROUNDS = 40


def test_threads_doing_read_modify_write_in_session_blocks_on_sqlite_never_get_busy(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'counter.db'}")
    try:
        create_all(db)
        with db.session() as session:
            session.add(Counter(id=1, value=0))
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(ROUNDS):
                    with db.session() as session:
                        counter = session.get_one(Counter, 1)
                        counter.value += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with db.session() as session:
            assert session.scalar(sa.select(Counter.value)) == THREADS * ROUNDS
    finally:
        db.dispose()
