"""A client gone before the response started, behind an inner ``BaseHTTPMiddleware``: the
middleware's task runs the background tasks as soon as Starlette hears of the disconnect,
which may be while the request's transaction commits. They must not join it then: they get a
transaction of their own, as they would after the commit. And a client gone mid-body, which
the body may see (``request.is_disconnected()``): the transaction the middleware then opens
for the background tasks is theirs, not the body's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import pytest
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from dalkit import (
    AsyncDatabase,
    Database,
    NoActiveTransactionError,
    current_async_session,
    current_session,
)
from dalkit.integrations.asgi import before_commit

from .apps import post_scope
from .models import Base, Note
from .test_application_tasks import application, sync_values, values


async def gone_before_the_response(app: Any) -> list[str]:
    """Run ``app`` for a ``POST /`` as uvicorn does for a client that left before the
    response started: ``receive()`` answers the disconnect at once."""
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await app(post_scope("2.3"), receive, send)
    return sent


async def test_background_tasks_running_while_the_request_commits_get_their_own_transaction(
    async_db: AsyncDatabase,
) -> None:
    # they joined the committing transaction: ResponseStartedError (and SQLAlchemy's SAWarning
    # about Session.add() during a flush when the COMMIT's flush was running)
    await async_db.create_all(Base.metadata)
    asked = asyncio.Event()
    errors: list[BaseException] = []

    async def later() -> None:
        try:
            async with async_db.transaction() as session:
                session.add(Note(value="background"))
        except BaseException as error:
            errors.append(error)
        finally:
            asked.set()

    async def slow_commit() -> None:  # the commit runs until the background task has run
        await asyncio.wait_for(asked.wait(), 10)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"chunk"

    async def endpoint(request: Request) -> Response:
        current_async_session().add(Note(value="stream"))
        before_commit(request.scope, slow_commit)
        return StreamingResponse(chunks(), background=BackgroundTask(later))

    await gone_before_the_response(application(async_db, endpoint, inner=True))
    assert errors == []
    assert await values(async_db) == ["background", "stream"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_sync_background_tasks_running_while_the_request_commits_get_their_own(
    sync_db: Database,
) -> None:
    asked = threading.Event()
    errors: list[BaseException] = []

    def later() -> None:
        try:
            with sync_db.transaction() as session:
                session.add(Note(value="background"))
        except BaseException as error:
            errors.append(error)
        finally:
            asked.set()

    def slow_commit() -> None:  # in the committing thread
        asked.wait(10)

    def chunks() -> Iterator[bytes]:
        yield b"chunk"

    def endpoint(request: Request) -> Response:
        current_session().add(Note(value="stream"))
        before_commit(request.scope, slow_commit)
        return StreamingResponse(chunks(), background=BackgroundTask(later))

    await gone_before_the_response(application(sync_db, endpoint, inner=True))  # type: ignore[arg-type]
    assert errors == []
    assert sync_values(sync_db) == ["background", "stream"]
    assert sync_db.pool_stats()["checked_out"] == 0


async def gone_mid_body(app: Any) -> None:
    """Run ``app`` for a ``POST /`` as a server of ASGI spec 2.4 does for a client that leaves
    after two messages of the response: ``receive()`` answers the disconnect at once from then
    on, and ``send()`` raises an OSError."""
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        if len(sent) < 2:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if len(sent) >= 2:
            raise OSError("the client is gone")
        sent.append(message["type"])

    with pytest.raises(ClientDisconnect):
        await app(post_scope("2.4"), receive, send)


async def test_a_body_that_sees_its_client_gone_writes_in_a_transaction_of_its_own(
    async_db: AsyncDatabase,
) -> None:
    # its db.transaction() joined the background tasks' one, which the middleware opened on
    # the disconnect, in the body's task: the block ended without error, and the row was lost
    # with the ClientDisconnect of the next send
    await async_db.create_all(Base.metadata)

    async def events(request: Request) -> AsyncIterator[bytes]:
        while not await request.is_disconnected():
            yield b"data: tick\n\n"
        async with async_db.transaction() as session:
            session.add(Note(value="left"))
        yield b"data: bye\n\n"

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(events(request), media_type="text/event-stream")

    await gone_mid_body(application(async_db, endpoint, inner=False))
    assert await values(async_db) == ["left"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_body_that_sees_its_client_gone_keeps_out_of_the_background_transaction(
    sync_db: Database,
) -> None:
    seen: list[object] = []

    async def events(request: Request) -> AsyncIterator[bytes]:
        while not await request.is_disconnected():
            yield b"data: tick\n\n"
        with sync_db.transaction() as session:
            session.add(Note(value="left"))
        try:
            current_session()
        except NoActiveTransactionError as error:  # as before the client left
            seen.append(type(error))
        yield b"data: bye\n\n"

    def endpoint(request: Request) -> Response:
        return StreamingResponse(events(request), media_type="text/event-stream")

    await gone_mid_body(application(sync_db, endpoint, inner=False))  # type: ignore[arg-type]
    assert sync_values(sync_db) == ["left"]
    assert seen == [NoActiveTransactionError]
    assert sync_db.pool_stats()["checked_out"] == 0
