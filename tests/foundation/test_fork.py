"""After os.fork() a child opens its own connections: parent and child never share a pooled
one (they would read each other's results), and the parent's pool is left as it was."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.engine import make_url

from dalkit import Database

pytestmark = pytest.mark.postgres


def _backend_pid(db: Database) -> int:
    return int(db.sql("SELECT pg_backend_pid() AS pid")[0]["pid"])


def test_a_forked_child_opens_its_own_connections(postgres_database_url: str) -> None:
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        parent = _backend_pid(db)  # one pooled connection, idle in the pool
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child process
            try:
                os.write(write, str(_backend_pid(db)).encode())
            finally:
                os._exit(0)
        os.close(write)
        answer = os.read(read, 64)
        os.close(read)
        os.waitpid(child, 0)
        assert answer
        assert int(answer) != parent
        assert _backend_pid(db) == parent  # the parent's connection is still its own
    finally:
        db.dispose()
