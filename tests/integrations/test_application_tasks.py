"""The request's code outside the application's own task: an endpoint behind an inner
``BaseHTTPMiddleware`` (which runs it in a task of its own) joins the request's transaction,
while tasks that would share its session side by side are refused, and background tasks after
a body Starlette sends from a task of its own (a StreamingResponse or FileResponse under a
server of ASGI spec < 2.4, such as uvicorn), or sent by path, get their transaction."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dalkit import (
    AsyncDatabase,
    AsyncUnitOfWork,
    Database,
    TransactionError,
    UnitOfWork,
    current_async_session,
    current_session,
)
from dalkit.integrations.asgi import DatabaseMiddleware

from .apps import post_scope
from .models import Base, Note

Endpoint = Callable[[Request], Awaitable[Response]]


async def passing(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    return await call_next(request)


def application(db: Database | AsyncDatabase, endpoint: Endpoint, *, inner: bool) -> Starlette:
    """``endpoint`` at ``/``, behind DatabaseMiddleware and, with ``inner``, a BaseHTTPMiddleware
    inside it (an ``@app.middleware("http")`` added before DatabaseMiddleware)."""
    middleware = [Middleware(DatabaseMiddleware, db=db)]
    if inner:
        middleware.append(Middleware(BaseHTTPMiddleware, dispatch=passing))
    return Starlette(routes=[Route("/", endpoint, methods=["POST"])], middleware=middleware)


async def post(app: Starlette, **params: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/", params=params)


async def values(db: AsyncDatabase) -> list[str]:
    async with db.transaction() as session:
        return sorted(await session.scalars(sa.select(Note.value)))


def sync_values(db: Database) -> list[str]:
    with db.transaction() as session:
        return sorted(session.scalars(sa.select(Note.value)))


@pytest.fixture
def a_file(tmp_path: Path) -> str:
    path = tmp_path / "body.txt"
    path.write_text("file body")
    return str(path)


async def test_an_endpoint_behind_an_inner_base_http_middleware_joins_the_request_transaction(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)

    async def endpoint(request: Request) -> Response:
        value = request.query_params["value"]
        async with async_db.transaction() as session:
            session.add(Note(value=value))
        async with async_db.transaction(propagation="nested") as session:
            session.add(Note(value=value + "-nested"))
        async with AsyncUnitOfWork(async_db) as unit:
            unit.session.add(Note(value=value + "-unit"))
        same = session is current_async_session()
        return PlainTextResponse(str(same), int(request.query_params.get("status", "200")))

    app = application(async_db, endpoint, inner=True)
    joined = await post(app, value="kept")
    assert (joined.status_code, joined.text) == (200, "True")
    refused = await post(app, value="refused", status="409")
    assert refused.status_code == 409  # the whole request rolled back: it was one transaction
    assert await values(async_db) == ["kept", "kept-nested", "kept-unit"]
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("body", ["stream", "file"])
async def test_background_tasks_after_a_body_sent_from_another_task_get_a_transaction(
    body: str, async_db: AsyncDatabase, a_file: str
) -> None:
    await async_db.create_all(Base.metadata)

    async def later() -> None:
        current_async_session().add(Note(value=f"{body}-background"))

    async def chunks() -> AsyncIterator[bytes]:
        yield b"streamed"

    async def endpoint(request: Request) -> Response:
        current_async_session().add(Note(value=body))
        if body == "stream":
            return StreamingResponse(chunks(), background=BackgroundTask(later))
        return FileResponse(a_file, background=BackgroundTask(later))

    response = await post(application(async_db, endpoint, inner=False))
    assert response.status_code == 200
    assert await values(async_db) == [body, f"{body}-background"]
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("body", ["stream", "file"])
async def test_sync_background_tasks_after_a_body_sent_from_another_task_get_a_transaction(
    body: str, sync_db: Database, a_file: str
) -> None:
    def later() -> None:
        current_session().add(Note(value=f"{body}-background"))

    def chunks() -> Iterator[bytes]:
        yield b"streamed"

    def endpoint(request: Request) -> Response:
        current_session().add(Note(value=body))
        with UnitOfWork(sync_db) as unit:  # joins the request's transaction in this thread
            unit.session.add(Note(value=f"{body}-unit"))
        if body == "stream":
            return StreamingResponse(chunks(), background=BackgroundTask(later))
        return FileResponse(a_file, background=BackgroundTask(later))

    response = await post(application(sync_db, endpoint, inner=False))  # type: ignore[arg-type]
    assert response.status_code == 200
    assert sync_values(sync_db) == [body, f"{body}-background", f"{body}-unit"]
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_tasks_sharing_the_request_transaction_side_by_side_are_refused(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)

    async def add(value: str) -> None:
        async with async_db.transaction() as session:
            session.add(Note(value=value))
            await session.flush()

    async def endpoint(request: Request) -> Response:
        await add("first")  # this task joined: it holds the request's transaction
        results = await asyncio.gather(add("a"), add("b"), return_exceptions=True)
        return PlainTextResponse(",".join(type(r).__name__ for r in results), 409)

    response = await post(application(async_db, endpoint, inner=True))
    assert response.text == "TransactionError,TransactionError"
    assert await values(async_db) == []
    assert async_db.pool_stats()["checked_out"] == 0


def slow_statement(db: Database | AsyncDatabase) -> sa.TextClause:
    """A statement that takes a moment on the test's backend."""
    if db.engine.dialect.name == "postgresql":
        return sa.text("SELECT pg_sleep(0.2)")
    return sa.text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
        "SELECT count(*) FROM c"
    )


@pytest.mark.parametrize("joins", ["session", "transaction"])
async def test_a_task_the_request_did_not_await_is_refused_and_the_request_commits(
    joins: str, async_db: AsyncDatabase
) -> None:
    # its statement ran beside the request's COMMIT: a 500 from asyncpg ('another operation
    # is in progress'), and the connection went back to the pool broken for the next requests
    await async_db.create_all(Base.metadata)
    tasks: list[asyncio.Task[None]] = []

    async def outliving(session: AsyncSession) -> None:
        if joins == "transaction":  # joins the request's transaction, still open
            async with async_db.transaction() as session:
                await session.execute(slow_statement(async_db))
                session.add(Note(value="task"))
                await session.flush()
            return
        await session.execute(slow_statement(async_db))  # in flight as the request ends
        session.add(Note(value="task"))
        await session.flush()

    async def endpoint(request: Request) -> Response:
        session = current_async_session()
        session.add(Note(value="request"))
        await session.flush()
        tasks.append(asyncio.create_task(outliving(session)))
        return PlainTextResponse("ok")

    response = await post(application(async_db, endpoint, inner=False))
    assert response.status_code == 200
    (task,) = tasks
    # ResponseStartedError once the request's transaction is ending; joining it before then,
    # from a task of its own, is the TransactionError of dalkit.transaction.scope: both say so
    with pytest.raises(TransactionError, match="transaction of its own"):
        await task
    for _ in range(3):  # every pooled connection is sound
        assert await values(async_db) == ["request"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_thread_the_request_did_not_await_is_refused_and_the_request_commits(
    sync_db: Database,
) -> None:
    # with a sync Database: a raw InvalidRequestError ('prepared' state) in the thread
    failures: list[BaseException] = []
    threads: list[threading.Thread] = []
    slow = slow_statement(sync_db)

    def outliving(session: Session) -> None:
        try:
            session.execute(slow)  # in flight as the request commits
            session.add(Note(value="thread"))
            session.flush()
        except BaseException as error:
            failures.append(error)

    def endpoint(request: Request) -> Response:
        session = current_session()
        session.add(Note(value="request"))
        session.flush()
        threads.append(threading.Thread(target=outliving, args=(session,)))
        threads[0].start()
        return PlainTextResponse("ok")

    response = await post(application(sync_db, endpoint, inner=False))  # type: ignore[arg-type]
    assert response.status_code == 200
    threads[0].join(10)
    # ResponseStartedError, or (when its statement ran on after the session closed) the
    # ended session's TransactionError: never a raw one from SQLAlchemy's session
    assert [isinstance(f, TransactionError) for f in failures] == [True]
    assert sync_values(sync_db) == ["request"]
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_background_tasks_after_a_file_sent_by_path_get_a_transaction(
    async_db: AsyncDatabase, a_file: str
) -> None:
    # a server offering the http.response.pathsend extension (Granian) sends the file itself
    await async_db.create_all(Base.metadata)

    async def later() -> None:
        current_async_session().add(Note(value="pathsend-background"))

    async def endpoint(request: Request) -> Response:
        current_async_session().add(Note(value="pathsend"))
        return FileResponse(a_file, background=BackgroundTask(later))

    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    scope = post_scope("2.4", {"http.response.pathsend": {}})
    await application(async_db, endpoint, inner=False)(scope, receive, send)
    assert sent == ["http.response.start", "http.response.pathsend"]
    assert await values(async_db) == ["pathsend", "pathsend-background"]
    assert async_db.pool_stats()["checked_out"] == 0


async def go_away_after_the_first_chunk(app: Starlette) -> list[str]:
    """Run ``app`` for a ``POST /`` as uvicorn would (ASGI spec 2.3: Starlette listens for the
    client's disconnect while it streams), the client going away after the first chunk."""
    sent: list[str] = []
    chunk = asyncio.Event()
    asked: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not asked:
            asked.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            chunk.set()

    await app(post_scope("2.3"), receive, send)
    return sent


async def test_background_tasks_after_a_client_gone_mid_stream_get_a_transaction(
    async_db: AsyncDatabase,
) -> None:
    # Starlette runs them all the same: they found no transaction (NoActiveTransactionError)
    await async_db.create_all(Base.metadata)

    async def later() -> None:
        current_async_session().add(Note(value="stream-background"))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(500):
            yield b"chunk"
            await asyncio.sleep(0.01)

    async def endpoint(request: Request) -> Response:
        current_async_session().add(Note(value="stream"))
        return StreamingResponse(chunks(), background=BackgroundTask(later))

    sent = await go_away_after_the_first_chunk(application(async_db, endpoint, inner=False))
    assert sent[:2] == ["http.response.start", "http.response.body"]
    assert await values(async_db) == ["stream", "stream-background"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_sync_background_tasks_after_a_client_gone_mid_stream_get_a_transaction(
    sync_db: Database,
) -> None:
    def later() -> None:
        current_session().add(Note(value="stream-background"))

    def chunks() -> Iterator[bytes]:
        for _ in range(500):
            yield b"chunk"
            time.sleep(0.01)

    def endpoint(request: Request) -> Response:
        current_session().add(Note(value="stream"))
        return StreamingResponse(chunks(), background=BackgroundTask(later))

    app = application(sync_db, endpoint, inner=False)  # type: ignore[arg-type]
    sent = await go_away_after_the_first_chunk(app)
    assert sent[:2] == ["http.response.start", "http.response.body"]
    assert sync_values(sync_db) == ["stream", "stream-background"]
    assert sync_db.pool_stats()["checked_out"] == 0
