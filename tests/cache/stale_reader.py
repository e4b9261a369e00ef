"""A reader process of the cross-process tests:
``python -m tests.cache.stale_reader DB_URL REDIS_URL PREFIX MODE [OUT]``.

``lockstep``: for each line ``round reads`` on stdin, read the counter ``reads`` times
through the cache and answer the values. ``continuous``: say ``reading`` after the first
read, read until stdin closes, then write one ``start_ns value`` line per read to OUT. Both
end with the cache statistics as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import sqlalchemy as sa

from dalkit import Database, RedisManager
from dalkit.cache import QueryCache, RedisBackend, install

from .models import Counter

STATEMENT = sa.select(Counter.value).where(Counter.id == 1)


def main(db_url: str, redis_url: str, prefix: str, mode: str, out: str = "") -> None:
    db = Database(db_url)
    cache = QueryCache(RedisBackend(RedisManager(redis_url), prefix=prefix))
    install(db, cache)

    def read() -> int:
        with db.transaction() as session:
            return int(cache.cached(session, STATEMENT).scalar_one())

    if mode == "lockstep":
        for line in sys.stdin:
            print(*(read() for _ in range(int(line.split()[1]))), flush=True)
    else:
        stop = threading.Event()

        def wait_for_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
        reads: list[tuple[int, int]] = []
        while not stop.is_set():
            started = time.monotonic_ns()
            reads.append((started, read()))
            if len(reads) == 1:
                print("reading", flush=True)  # the test starts committing once all say so
            time.sleep(0.001)  # leave the writer a core: the machine may have only two
        with open(out, "w") as file:
            file.writelines(f"{started} {value}\n" for started, value in reads)
    print(json.dumps(cache.get_stats()), flush=True)
    db.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:])
