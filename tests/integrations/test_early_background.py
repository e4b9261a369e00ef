"""Background tasks that Starlette runs before the response reaches DatabaseMiddleware: behind
a middleware inside it that holds the response back (one that buffers the body), or an
inner ``BaseHTTPMiddleware`` whose dispatch awaits after ``call_next`` while the client has
left (a stream's background runs once Starlette hears of it). The request's transaction has
not begun to end then; they must not join it all the same (their writes would commit with
it, or vanish with a rollback for the status)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dalkit import (
    AsyncDatabase,
    Database,
    NoActiveTransactionError,
    current_async_session,
    current_session,
)
from dalkit.integrations.asgi import ASGIApp, DatabaseMiddleware
from dalkit.integrations.errors import ResponseStartedError

from .models import Base, Note
from .test_application_tasks import Endpoint, post, sync_values, values
from .test_client_gone import gone_before_the_response


class Buffering:
    """A middleware passing the response on once the application has sent all of it (to set
    an ETag or a Content-Length, say)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        held: list[MutableMapping[str, Any]] = []

        async def keep(message: MutableMapping[str, Any]) -> None:
            held.append(message)

        await self.app(scope, receive, keep)
        for message in held:
            await send(message)


def buffered(db: Database | AsyncDatabase, endpoint: Endpoint) -> Starlette:
    middleware = [Middleware(DatabaseMiddleware, db=db), Middleware(Buffering)]
    return Starlette(routes=[Route("/", endpoint, methods=["POST"])], middleware=middleware)


async def test_background_tasks_run_before_a_buffered_response_do_not_join_the_request(
    async_db: AsyncDatabase,
) -> None:
    # they joined it: the 409 rolled the background's own db.transaction() back with it
    await async_db.create_all(Base.metadata)
    seen: list[object] = []

    async def later() -> None:
        try:
            current_async_session()
        except NoActiveTransactionError as error:
            seen.append(type(error))
        async with async_db.transaction() as session:
            session.add(Note(value="background"))

    async def endpoint(request: Request) -> Response:
        current_async_session()  # the request holds its transaction
        return PlainTextResponse("no", status_code=409, background=BackgroundTask(later))

    assert (await post(buffered(async_db, endpoint))).status_code == 409
    assert seen == [NoActiveTransactionError]
    assert await values(async_db) == ["background"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_sync_background_tasks_run_before_a_buffered_response_do_not_join_the_request(
    sync_db: Database,
) -> None:
    # in a worker thread, run for the task inside the background task
    seen: list[object] = []

    def later() -> None:
        try:
            current_session()
        except NoActiveTransactionError as error:
            seen.append(type(error))
        with sync_db.transaction() as session:
            session.add(Note(value="background"))

    def endpoint(request: Request) -> Response:
        current_session()
        return PlainTextResponse("no", status_code=409, background=BackgroundTask(later))

    assert (await post(buffered(sync_db, endpoint))).status_code == 409  # type: ignore[arg-type]
    assert seen == [NoActiveTransactionError]
    assert sync_values(sync_db) == ["background"]
    assert sync_db.pool_stats()["checked_out"] == 0


def lingering(db: Database | AsyncDatabase, endpoint: Endpoint, ran: Any) -> Starlette:
    """``endpoint`` behind an inner BaseHTTPMiddleware that awaits ``ran`` after call_next."""

    async def dispatch(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for _ in range(1000):  # a logging middleware's await, while Starlette runs the task
            if ran.is_set():
                break
            await asyncio.sleep(0.01)
        return response

    middleware = [
        Middleware(DatabaseMiddleware, db=db),
        Middleware(BaseHTTPMiddleware, dispatch=dispatch),
    ]
    return Starlette(routes=[Route("/", endpoint, methods=["POST"])], middleware=middleware)


async def test_background_tasks_of_a_client_gone_before_the_commit_began_get_their_own(
    async_db: AsyncDatabase,
) -> None:
    # they joined the request's transaction: rolled back with it for the 409
    await async_db.create_all(Base.metadata)
    ran = asyncio.Event()

    async def later() -> None:
        try:
            async with async_db.transaction() as session:
                session.add(Note(value="background"))
        finally:
            ran.set()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"chunk"

    async def endpoint(request: Request) -> Response:
        current_async_session()
        return StreamingResponse(chunks(), status_code=409, background=BackgroundTask(later))

    await gone_before_the_response(lingering(async_db, endpoint, ran))
    assert ran.is_set()
    assert await values(async_db) == ["background"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_sync_background_tasks_of_a_client_gone_before_the_commit_began_get_their_own(
    sync_db: Database,
) -> None:
    ran = threading.Event()

    def later() -> None:
        try:
            with sync_db.transaction() as session:
                session.add(Note(value="background"))
        finally:
            ran.set()

    def chunks() -> Iterator[bytes]:
        yield b"chunk"

    def endpoint(request: Request) -> Response:
        current_session()
        return StreamingResponse(chunks(), status_code=409, background=BackgroundTask(later))

    await gone_before_the_response(lingering(sync_db, endpoint, ran))  # type: ignore[arg-type]
    assert ran.is_set()
    assert sync_values(sync_db) == ["background"]
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_a_background_task_handed_the_request_session_is_refused_before_the_commit(
    async_db: AsyncDatabase,
) -> None:
    # its object and flush joined the request's transaction, committed with it (or rolled
    # back with an error status); after the commit the same call raises ResponseStartedError
    await async_db.create_all(Base.metadata)
    refused: list[object] = []

    async def later(session: AsyncSession) -> None:
        try:
            session.add(Note(value="background"))
        except ResponseStartedError as error:
            refused.append(type(error))
        try:
            await session.execute(sa.insert(Note).values(value="background-insert"))
        except ResponseStartedError as error:
            refused.append(type(error))

    async def endpoint(request: Request) -> Response:
        session = current_async_session()
        session.add(Note(value="request"))
        return PlainTextResponse("ok", background=BackgroundTask(later, session))

    assert (await post(buffered(async_db, endpoint))).status_code == 200
    assert refused == [ResponseStartedError, ResponseStartedError]
    assert await values(async_db) == ["request"]


async def test_a_sync_background_task_handed_the_request_session_is_refused_before_the_commit(
    sync_db: Database,
) -> None:
    refused: list[object] = []

    def later(session: Session) -> None:
        try:
            session.add(Note(value="background"))
        except ResponseStartedError as error:
            refused.append(type(error))
        try:
            session.execute(sa.insert(Note).values(value="background-insert"))
        except ResponseStartedError as error:
            refused.append(type(error))

    def endpoint(request: Request) -> Response:
        session = current_session()
        session.add(Note(value="request"))
        return PlainTextResponse("ok", background=BackgroundTask(later, session))

    assert (await post(buffered(sync_db, endpoint))).status_code == 200  # type: ignore[arg-type]
    assert refused == [ResponseStartedError, ResponseStartedError]
    assert sync_values(sync_db) == ["request"]
