"""Across OS processes sharing Redis: once a commit has returned, no process serves a result
computed before it (a writer here, readers in other processes)."""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dalkit import Database, RedisManager
from dalkit.cache import QueryCache, RedisBackend, install

from .models import Base, Counter

# no_cover: the tracer slowed the writer and each reader process (~40% more CPU), and every line
# they run, the in-process cache tests run too (tests/cache: Redis backend, invalidation, hits)
pytestmark = pytest.mark.no_cover

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 2000
COMMITS = 200


def reader(
    db_url: str, redis_url: str, prefix: str, mode: str, out: str = ""
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache.stale_reader", db_url, redis_url, prefix, mode, out],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def writer(db_url: str, redis_url: str, prefix: str) -> tuple[Database, QueryCache]:
    db = Database(db_url)
    db.create_all(Base.metadata)
    with db.transaction() as session:
        session.merge(Counter(id=1, value=0))
    cache = QueryCache(RedisBackend(RedisManager(redis_url), prefix=prefix))
    install(db, cache)
    return db, cache


@pytest.mark.slow
def test_a_reader_in_another_process_never_sees_a_value_older_than_a_returned_commit(
    db_url: str, redis_url: str
) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    db, cache = writer(db_url, redis_url, prefix)
    process = reader(db_url, redis_url, prefix, "lockstep")
    assert process.stdin is not None
    assert process.stdout is not None
    stale = 0
    for i in range(1, ROUNDS + 1):
        with db.transaction() as session:
            counter = session.get(Counter, 1)
            assert counter is not None
            counter.value = i
        # every tenth round reads twice: the second read must be a hit
        process.stdin.write(f"{i} {2 if i % 10 == 0 else 1}\n")
        process.stdin.flush()
        stale += sum(int(value) < i for value in process.stdout.readline().split())
    process.stdin.close()
    stats = json.loads(process.stdout.read())
    process.stdout.close()
    assert process.wait(timeout=30) == 0
    assert stale == 0
    assert cache.get_stats()["invalidations"] == ROUNDS
    assert stats["hits"] >= ROUNDS // 10  # second reads were served from Redis
    db.dispose()


@pytest.mark.slow
def test_four_readers_reading_continuously_never_see_data_older_than_a_returned_commit(
    db_url: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"y{uuid.uuid4().hex[:8]}"
    db, _cache = writer(db_url, redis_url, prefix)
    outs = [tmp_path / f"reader{n}.txt" for n in range(4)]
    processes = [reader(db_url, redis_url, prefix, "continuous", str(out)) for out in outs]
    for process in processes:  # up and reading (a fixed sleep was too short under load)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "reading"
    returned = [0]  # returned[i]: when the commit of value i returned
    for i in range(1, COMMITS + 1):
        with db.transaction() as session:
            counter = session.get(Counter, 1)
            assert counter is not None
            counter.value = i
        returned.append(time.monotonic_ns())
        time.sleep(0.002)
    hits = 0
    for process in processes:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()
        hits += json.loads(process.stdout.read())["hits"]
        process.stdout.close()
        assert process.wait(timeout=30) == 0
    violations = reads = 0
    for out in outs:
        for line in out.read_text().splitlines():
            started, value = map(int, line.split())
            reads += 1
            newest = bisect.bisect_left(returned, started) - 1  # last commit returned before
            violations += value < newest
    assert reads > COMMITS
    assert hits > 0
    assert violations == 0
    db.dispose()
