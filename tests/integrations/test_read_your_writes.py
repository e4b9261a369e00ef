"""Read-your-writes across requests and processes: a request that wrote gives its client the
replica token (cookie or header); another client instance carrying it reads from the primary
while the replica lags, and one without it reads from the replica. Real primary and streaming
replica, replay paused, for both APIs; plus the token's parsing, which needs no servers."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dalkit import (
    AsyncDatabase,
    ConfigurationError,
    Database,
    current_async_session,
    current_session,
)
from dalkit.integrations.asgi import DatabaseMiddleware
from dalkit.integrations.replica_tokens import ReplicaTokens
from dalkit.testing.replication import (
    Replication,
    current_lsn,
    replicated_database,
    replication,
)

from .models import Base, Note

__all__ = ["replicated_database", "replication"]  # the fixtures, imported to be found

INTERVAL = 0.1


def replica_app(db: AsyncDatabase, **options: Any) -> Starlette:
    async def write(request: Request) -> Response:
        current_async_session().add(Note(value=request.path_params["value"]))
        return JSONResponse({}, status_code=201)

    async def read(request: Request) -> Response:
        probe = sa.select(
            sa.select(sa.func.count())
            .where(Note.value == request.path_params["value"])
            .scalar_subquery(),
            sa.func.pg_is_in_recovery(),
        )
        found, on_replica = (await current_async_session().execute(probe)).one()
        return JSONResponse({"found": found, "on_replica": on_replica})

    routes = [
        Route("/notes/{value}", write, methods=["POST"]),
        Route("/notes/{value}", read, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(DatabaseMiddleware, db=db, **options)])


@pytest.fixture
async def replicated(
    replicated_database: tuple[str, str], replication: Replication
) -> AsyncIterator[AsyncDatabase]:
    primary, replica = replicated_database
    database = AsyncDatabase(
        primary.replace("postgresql://", "postgresql+asyncpg://"),
        replicas=[replica],
        max_replica_lag_s=3600,  # a paused replica stays admitted: only the token decides
        replica_monitor_interval_s=INTERVAL,
    )
    try:
        await database.create_all(Base.metadata)
        yield database
    finally:
        await database.dispose()


async def until(condition: Callable[[], bool], within: float = 30) -> None:
    """Until ``condition()``: the replica's replay and the monitor's next round, which take many
    seconds on a loaded machine."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "not true in time"
        await asyncio.sleep(0.02)


def replica_reads(db: AsyncDatabase) -> int:
    replicas: dict[str, Any] = db.get_stats()["replicas"]["replicas"]
    return sum(replica["reads"] for replica in replicas.values())


async def caught_up(db: AsyncDatabase, replication: Replication, http: httpx.AsyncClient) -> None:
    """The replica has replayed everything, and the monitor (started by a read) has seen it."""
    lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
    await asyncio.to_thread(replication.replica.wait_for, lsn)
    assert (await http.get("/notes/warm-up")).status_code == 200

    def seen() -> bool:
        replicas: dict[str, Any] = db.get_stats()["replicas"]["replicas"]
        return position(next(iter(replicas.values()))["replay_lsn"]) >= position(lsn)

    await until(seen)


def position(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def client(db: AsyncDatabase, **options: Any) -> httpx.AsyncClient:
    """A client instance of its own: nothing shared with another but what a test passes."""
    transport = httpx.ASGITransport(app=replica_app(db, **options))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.slow
async def test_a_cookie_sends_another_clients_read_to_the_primary_while_the_replica_lags(
    replicated: AsyncDatabase, replication: Replication
) -> None:
    async with client(replicated) as writer, client(replicated) as reader:
        await caught_up(replicated, replication, reader)
        await asyncio.to_thread(replication.replica.pause_replay)
        posted = await writer.post("/notes/fresh")
        assert posted.status_code == 201
        token = posted.cookies["dalkit_lsn"]
        assert "HttpOnly" in posted.headers["set-cookie"]

        before = replica_reads(replicated)
        without = await reader.get("/notes/fresh")
        assert without.json() == {"found": 0, "on_replica": True}  # stale, as a replica is
        assert replica_reads(replicated) == before + 1

        reader.cookies.set("dalkit_lsn", token)  # as a browser would send it back
        carrying = await reader.get("/notes/fresh")
        assert carrying.json() == {"found": 1, "on_replica": False}
        assert replica_reads(replicated) == before + 1
        assert "set-cookie" not in carrying.headers  # a read hands out no token
        stats = replicated.get_stats()["replicas"]
        assert stats["read_your_writes_on_primary"] >= 1


@pytest.mark.slow
async def test_a_header_carries_the_token_both_ways(
    replicated: AsyncDatabase, replication: Replication
) -> None:
    options = {"read_your_writes": "header"}
    async with client(replicated, **options) as writer, client(replicated, **options) as reader:
        await caught_up(replicated, replication, reader)
        await asyncio.to_thread(replication.replica.pause_replay)
        posted = await writer.post("/notes/by-header")
        token = posted.headers["x-dalkit-lsn"]
        assert "set-cookie" not in posted.headers
        carrying = await reader.get("/notes/by-header", headers={"x-dalkit-lsn": token})
        assert carrying.json() == {"found": 1, "on_replica": False}
        garbage = await reader.get("/notes/by-header", headers={"x-dalkit-lsn": "1; DROP"})
        assert garbage.status_code == 200  # a malformed token is ignored, never an error
        assert garbage.json() == {"found": 0, "on_replica": True}


def scope_with(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "headers": list(headers)}


def test_the_token_is_read_from_its_cookie_among_others_and_checked() -> None:
    tokens = ReplicaTokens("cookie")
    assert tokens.read(scope_with((b"cookie", b"a=1; dalkit_lsn=0/16B3748; b=2"))) == "0/16B3748"
    assert tokens.read(scope_with((b"cookie", b"dalkit_lsn=../etc"))) is None
    assert tokens.read(scope_with((b"x-dalkit-lsn", b"0/1"))) is None
    assert ReplicaTokens("header", "X-LSN").read(scope_with((b"x-lsn", b" 0/1 "))) == "0/1"


def test_the_cookie_given_is_secure_over_https() -> None:
    start = {"type": "http.response.start", "status": 201, "headers": [(b"a", b"b")]}
    given = ReplicaTokens("cookie").give({"scheme": "https"}, start, "0/1")
    assert given["headers"] == [
        (b"a", b"b"),
        (b"set-cookie", b"dalkit_lsn=0/1; Path=/; HttpOnly; SameSite=Lax; Secure"),
    ]
    assert start["headers"] == [(b"a", b"b")]  # the application's message is left alone


def test_bad_token_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="read_your_writes"):
        ReplicaTokens("query")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="name"):
        ReplicaTokens("cookie", "a cookie")


async def test_without_replicas_no_token_travels_and_every_transaction_may_write(
    async_db: AsyncDatabase,
) -> None:
    middleware = DatabaseMiddleware(replica_app(async_db), async_db)
    assert middleware.replica_tokens is None
    assert middleware.read_only_methods == frozenset()
    await async_db.create_all(Base.metadata)
    async with client(async_db) as http:
        posted = await http.post("/notes/plain")
        assert posted.status_code == 201
        assert "set-cookie" not in posted.headers


def sync_replica_app(db: Database) -> Starlette:
    """Sync endpoints on a sync Database: the token is taken in the committing thread."""

    def write(request: Request) -> Response:
        current_session().add(Note(value=request.path_params["value"]))
        return JSONResponse({}, status_code=201)

    def read(request: Request) -> Response:
        probe = sa.select(
            sa.select(sa.func.count())
            .where(Note.value == request.path_params["value"])
            .scalar_subquery(),
            sa.func.pg_is_in_recovery(),
        )
        found, on_replica = current_session().execute(probe).one()
        return JSONResponse({"found": found, "on_replica": on_replica})

    routes = [
        Route("/notes/{value}", write, methods=["POST"]),
        Route("/notes/{value}", read, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(DatabaseMiddleware, db=db)])


@pytest.mark.slow
async def test_a_sync_database_hands_out_and_honours_the_token_too(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    primary, replica = replicated_database
    db = Database(
        primary, replicas=[replica], max_replica_lag_s=3600, replica_monitor_interval_s=INTERVAL
    )
    try:
        # as another process would: create_all binds the reads of its own context to the primary
        contextvars.copy_context().run(db.create_all, Base.metadata)
        lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
        await asyncio.to_thread(replication.replica.wait_for, lsn)
        transport = httpx.ASGITransport(app=sync_replica_app(db))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://test") as writer,
            httpx.AsyncClient(transport=transport, base_url="http://test") as reader,
        ):
            assert (await reader.get("/notes/warm-up")).json()["on_replica"] is True
            await until(lambda: sync_replay(db) >= position(lsn))
            await asyncio.to_thread(replication.replica.pause_replay)
            posted = await writer.post("/notes/sync")
            assert posted.status_code == 201
            assert (await reader.get("/notes/sync")).json() == {"found": 0, "on_replica": True}
            reader.cookies.set("dalkit_lsn", posted.cookies["dalkit_lsn"])
            assert (await reader.get("/notes/sync")).json() == {"found": 1, "on_replica": False}
    finally:
        db.dispose()


def sync_replay(db: Database) -> int:
    replicas: dict[str, Any] = db.get_stats()["replicas"]["replicas"]
    return position(next(iter(replicas.values()))["replay_lsn"])
