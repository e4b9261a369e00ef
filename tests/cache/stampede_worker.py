"""One process of the cross-process stampede test: THREADS threads read the same cold key
through a Redis cache with the stampede lock, and the values they read go back to the test."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from dalkit import Database, RedisManager
from dalkit.cache import QueryCache, RedisBackend, install

THREADS = 10
#: each run of the query waits, then counts itself in the database (the stampede_calls
#: sequence: a function writing a table would be no read to cache, dalkit.cache.functions)
STATEMENT = sa.select(sa.func.stampede_tick().label("calls"))
SETUP = [
    "CREATE SEQUENCE stampede_calls",
    """CREATE FUNCTION stampede_tick() RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        PERFORM pg_sleep(0.5);
        RETURN nextval('stampede_calls');
    END $$""",
]


def calls(db: Database) -> int:
    """How many times the query has run, counted by the database itself."""
    count = sa.text("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM stampede_calls")
    with db.engine.connect() as connection:
        return int(connection.execute(count).scalar_one())


def run(db_url: str, redis_url: str, prefix: str, start: Any, out: Any) -> None:
    """Read STATEMENT from THREADS threads once every process is ready (``start``, a
    multiprocessing Barrier), then put ``(values read, errors, cache stats)`` on ``out``."""
    db = Database(db_url)
    manager = RedisManager(redis_url)
    backend = RedisBackend(manager, prefix=prefix, stampede_lock=True, lock_timeout=30)
    cache = install(db, QueryCache(backend))
    with db.transaction() as session:  # connect before the clock starts
        session.execute(sa.text("SELECT 1"))
    together = threading.Barrier(THREADS)
    values: list[int] = []
    errors: list[str] = []

    def read() -> None:
        try:
            together.wait()
            with db.transaction() as session:
                values.append(int(cache.cached(session, STATEMENT).scalar_one()))
        except Exception as error:  # reported to the test, not lost in the thread
            errors.append(repr(error))

    threads = [threading.Thread(target=read) for _ in range(THREADS)]
    start.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((values, errors, cache.get_stats()))
    backend.close()
    manager.close()
    db.dispose()
