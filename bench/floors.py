"""``python -m bench.floors``: where the two async targets of the peers bench that dalkit misses
stand against what any library keeping a transaction and a session could do, in one run.

- **32 tasks over a pool of 8 (get by id)** is CPU-bound here (2 cores), so the CPU per request
  decides it. The variants add one layer at a time: SQLAlchemy Core on an AUTOCOMMIT engine (no
  session); a bare ``AsyncSession`` on that engine reading through dalkit's plain entity read;
  the same on dalkit's transaction bind (deferred BEGIN, pool metrics, liveness, statement
  statistics); ``db.transaction()`` around it; and the repository ``get``. Tortoise is the
  target.
- **Insert one row**: a write transaction sends BEGIN, the INSERT and COMMIT (issue 10's own
  requirement), where Tortoise and Piccolo send the INSERT alone, in autocommit. The raw
  driver in ``BEGIN ... COMMIT``, with nothing of a library around it, is the ceiling of every
  transactional insert.

Prints CPU microseconds per request (median and quartiles over the repeats) and ops/s.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.util import greenlet_spawn

from bench.peers.base import DDL, INSERT_CATEGORY, T0, Target
from bench.peers.dalkit_default import DalkitAsync
from bench.peers.loop import AsyncLoop, at_once, in_sequence
from bench.peers.raw_drivers import AsyncpgPool
from bench.peers.sa_models import Item
from bench.peers.sqlalchemy_core import GET
from bench.peers.tortoise_orm import TortoiseAsync
from dalkit.cache.repository import _read
from dalkit.testing import PostgresServer

REPEATS = 9
BATCHES = 15
TASKS = 32
SEQUENCE = 20
GET_BY_ID = sa.select(Item).where(Item.id == sa.bindparam("pk0"))

Request = Callable[[Any], Awaitable[object]]


def main() -> int:
    with PostgresServer() as server:
        url = server.create_database("floors")
        with psycopg.connect(url, autocommit=True) as connection:
            for statement in DDL:
                connection.execute(statement)
        target = Target.from_url(url)
        loop = AsyncLoop()
        gets, inserts = _variants(loop, target)
        print("async, 32 tasks over a pool of 8 (get by id): CPU per request")
        _report(loop, gets, lambda f, n: at_once(f, _ids(), n), TASKS)
        print("\nasync insert 1 row, one after another")
        rows: Any = _rows  # in_sequence is typed for the ids of reads
        _report(loop, inserts, lambda f, n: in_sequence(f, rows, n), SEQUENCE)
    return 0


def _variants(loop: AsyncLoop, target: Target) -> tuple[dict[str, Request], dict[str, Request]]:
    dalkit, tortoise, raw = DalkitAsync(), TortoiseAsync(), AsyncpgPool()
    for peer in (dalkit, tortoise, raw):
        loop.call(peer.setup(target, 8))
    autocommit = create_async_engine(
        target.sqlalchemy_url("asyncpg"), pool_size=8, max_overflow=0, isolation_level="AUTOCOMMIT"
    )
    db = dalkit.db
    loop.call(dalkit.get(1))
    loop.call(dalkit.get(2))  # the transaction bind is kept once the server's isolation is known
    bind = next(iter(db._transactions._binds.values()))

    async def core(ident: int) -> object:
        async with autocommit.connect() as connection:
            return (await connection.execute(GET, {"id": ident})).one()

    async def session_on(engine: Any, ident: int) -> object:
        async with AsyncSession(engine) as session:
            return await greenlet_spawn(_read, session.sync_session, GET_BY_ID, {"pk0": ident})

    async def in_transaction(ident: int) -> object:
        async with db.transaction() as session:
            return await greenlet_spawn(_read, session.sync_session, GET_BY_ID, {"pk0": ident})

    gets: dict[str, Request] = {
        "Tortoise": tortoise.get,
        "SQLAlchemy Core, AUTOCOMMIT engine (no session)": core,
        "+ AsyncSession, dalkit's plain read": lambda i: session_on(autocommit, i),
        "+ dalkit's transaction bind": lambda i: session_on(bind, i),
        "+ db.transaction()": in_transaction,
        "dalkit repository get": dalkit.get,
    }
    inserts: dict[str, Request] = {
        "Tortoise (autocommit)": tortoise.insert,
        "asyncpg (raw, autocommit)": raw.insert,
        "asyncpg (raw) in BEGIN ... COMMIT": raw.insert_in_transaction,
        "dalkit repository add": dalkit.insert,
    }
    return gets, inserts


def _report(
    loop: AsyncLoop, variants: dict[str, Request], run: Callable[[Request, int], Any], n: int
) -> None:
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        for _ in range(5):
            loop.call(run(fn, n))
    for _ in range(REPEATS):  # interleaved: drift falls on every variant alike
        for name, fn in variants.items():
            cpu_started, started = time.process_time(), time.perf_counter()
            for _ in range(BATCHES):
                loop.call(run(fn, n))
            calls = BATCHES * n
            cpu[name].append((time.process_time() - cpu_started) / calls * 1e6)
            wall[name].append(calls / (time.perf_counter() - started))
    for name in variants:
        spent = sorted(cpu[name])
        quartiles = statistics.quantiles(spent, n=4)
        print(
            f"  {name:50s} {statistics.median(spent):5.0f} us CPU "
            f"(quartiles {quartiles[0]:.0f}-{quartiles[2]:.0f}), "
            f"{statistics.median(wall[name]):6,.0f} ops/s"
        )


def _ids() -> Callable[[], int]:
    counter = iter(range(1, 10**9))
    return lambda: next(counter) * 7919 % 99_000 + 1


def _rows() -> dict[str, Any]:
    return {"name": "n", "email": "e", "category": INSERT_CATEGORY, "score": 1, "created_at": T0}


if __name__ == "__main__":
    sys.exit(main())
