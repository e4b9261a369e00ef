"""One process of the cross-process stampede test: THREADS threads read the same cold key
through a Redis cache with the stampede lock, and the values they read go back to the test."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from dalkit import Database, RedisManager
from dalkit.cache import QueryCache, RedisBackend, install

THREADS = 10
#: each run of the query waits, then answers with the moment it ran, to the microsecond: the
#: readers of one run read the same value. (Not a sequence's nextval(), nor a write: a read
#: calling a function that acts goes to the database every time, dalkit.cache.functions.)
STATEMENT = sa.select(sa.func.stampede_tick().label("ran_at"))
SETUP = [
    """CREATE FUNCTION stampede_tick() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        PERFORM pg_sleep(0.5);
        RETURN (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    END $$""",
]


def counting(engine: Engine) -> list[str]:
    """The runs of the query that ``engine`` sends from now on (a list that grows with each),
    seen by SQLAlchemy's cursor event, as the driver is handed the statement."""
    runs: list[str] = []

    def sent(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
    ) -> None:
        if "stampede_tick" in statement:
            runs.append(statement)

    event.listen(engine, "before_cursor_execute", sent)
    return runs


def run(db_url: str, redis_url: str, prefix: str, start: Any, out: Any) -> None:
    """Read STATEMENT from THREADS threads once every process is ready (``start``, a
    multiprocessing Barrier), then put ``(values read, errors, cache stats, runs of the query
    this process sent)`` on ``out``."""
    db = Database(db_url)
    manager = RedisManager(redis_url)
    backend = RedisBackend(manager, prefix=prefix, stampede_lock=True, lock_timeout=30)
    cache = install(db, QueryCache(backend))
    runs = counting(db.engine)
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
    out.put((values, errors, cache.get_stats(), len(runs)))
    backend.close()
    manager.close()
    db.dispose()
