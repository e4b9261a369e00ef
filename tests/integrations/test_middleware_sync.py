"""DatabaseMiddleware on a sync Database with sync endpoints, which Starlette runs in its
thread pool: the request's transaction follows the endpoint into the thread, which may join it,
no statement runs on the event loop, and COMMIT ends before the response starts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from dalkit import Database, current_session
from dalkit.integrations.asgi import DatabaseMiddleware, before_commit

from .apps import post_scope, sync_app
from .models import Note


def stored(db: Database, value: str) -> int:
    with db.transaction() as session:
        return int(session.scalar(sa.select(sa.func.count()).where(Note.value == value)) or 0)


async def test_a_sync_endpoint_is_committed_before_the_response(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/notes", params={"value": "sync-kept"})
    assert response.status_code == 200
    assert stored(sync_db, "sync-kept") == 1
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_a_sync_endpoint_answering_4xx_is_rolled_back(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/notes", params={"value": "sync-no", "status": "409"})
    assert response.status_code == 409
    assert stored(sync_db, "sync-no") == 0


async def test_a_sync_commit_that_fails_gives_a_500(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/orphans", params={"value": "sync-orphan"})
    assert response.status_code == 500
    assert response.json()["status"] == 500
    assert stored(sync_db, "sync-orphan") == 0
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_a_sync_stream_commits_first_and_refuses_later_writes(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/stream", params={"value": "sync-stream"})
    assert response.text == "first refused"
    assert stored(sync_db, "sync-stream") == 1
    assert stored(sync_db, "late") == 0


async def test_a_sync_endpoint_joins_the_request_transaction_from_its_thread(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/joined", params={"value": "j"})
    assert response.status_code == 200
    assert response.json() == {"same": True, "seen": 2}  # db.sql() saw both, uncommitted
    assert [stored(sync_db, v) for v in ("j", "j-nested")] == [1, 1]
    refused = await sync_client.post("/joined", params={"value": "r", "status": "409"})
    assert refused.status_code == 409
    assert [stored(sync_db, v) for v in ("r", "r-nested")] == [0, 0]
    assert sync_db.pool_stats()["checked_out"] == 0


@pytest.fixture
def statement_threads(sync_db: Database) -> Iterator[list[int]]:
    """The thread of every statement the database runs during the test."""
    threads: list[int] = []

    def note(*args: Any) -> None:
        threads.append(threading.get_ident())

    sa.event.listen(sync_db.engine, "before_cursor_execute", note)
    sa.event.listen(sync_db.engine, "commit", note)
    try:
        yield threads
    finally:
        sa.event.remove(sync_db.engine, "before_cursor_execute", note)
        sa.event.remove(sync_db.engine, "commit", note)


async def test_no_statement_or_commit_runs_on_the_event_loop(
    sync_client: httpx.AsyncClient, statement_threads: list[int]
) -> None:
    for path in ("/notes", "/joined", "/orphans"):
        await sync_client.post(path, params={"value": f"loop-{path[1:]}"})
    await sync_client.post("/notes", params={"value": "loop-4xx", "status": "400"})
    assert len(statement_threads) >= 10
    assert threading.get_ident() not in statement_threads


async def test_the_commit_is_visible_to_others_when_the_response_starts(
    sync_db: Database,
) -> None:
    seen: list[int] = []
    app = sync_app(sync_db)

    async def watching(scope: Any, receive: Any, send: Any) -> None:
        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen.append(await anyio.to_thread.run_sync(stored, sync_db, "watched"))
            await send(message)

        await app(scope, receive, watch)

    transport = httpx.ASGITransport(app=watching)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/notes", params={"value": "watched"})
    assert response.status_code == 200
    assert seen == [1]


async def test_before_commit_hooks_run_in_the_committing_thread_and_commit_with_it(
    sync_client: httpx.AsyncClient, sync_db: Database, statement_threads: list[int]
) -> None:
    response = await sync_client.post("/hooked", params={"value": "h"})
    assert response.status_code == 200
    refused = await sync_client.post("/hooked", params={"value": "a", "hook": "async"})
    assert refused.status_code == 500  # an awaitable hook cannot run: nothing is saved
    assert threading.get_ident() not in statement_threads
    assert [stored(sync_db, v) for v in ("h", "h-hook")] == [1, 1]
    assert [stored(sync_db, v) for v in ("a", "a-never")] == [0, 0]


async def test_a_client_gone_while_a_stream_commits_does_not_lose_the_application_task(
    sync_db: Database,
) -> None:
    # Starlette sends a stream's start from a task of its own (ASGI spec < 2.4, as uvicorn
    # gives), while the application's task waits for the client to go away; it goes during
    # COMMIT, and the application's task wakes while the committing thread runs
    def endpoint(request: Request) -> Response:
        current_session().add(Note(value="streamed-late"))
        before_commit(request.scope, lambda: time.sleep(0.5))
        return StreamingResponse(iter([b"body"]))

    app = Starlette(
        routes=[Route("/", endpoint, methods=["POST"])],
        middleware=[Middleware(DatabaseMiddleware, db=sync_db)],
    )
    received: list[str] = []

    async def receive() -> dict[str, Any]:
        if not received:
            received.append("request")
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        received.append(message["type"])

    scope = post_scope("2.3")
    request = asyncio.create_task(app(scope, receive, send))
    done, _ = await asyncio.wait({request}, timeout=10)
    assert request in done  # it was never woken again before
    assert received[:2] == ["request", "http.response.start"]
    assert stored(sync_db, "streamed-late") == 1
    assert sync_db.pool_stats()["checked_out"] == 0
