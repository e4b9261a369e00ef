"""A result the request opened on a server-side cursor (``yield_per``, ``stream()``) and a
streaming body reads on after the response started: its cursor closes before the request's
COMMIT, and reading on raises ResponseStartedError, never a fetch on the pooled connection that
another request's transaction holds by then."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dalkit import AsyncDatabase, Database, current_async_session, current_session
from dalkit.integrations.asgi import DatabaseMiddleware
from dalkit.integrations.errors import ResponseStartedError

from .models import Base, Note

ROWS = 60


async def test_a_stream_reading_on_after_the_commit_is_refused_and_other_requests_are_untouched(
    async_db_url: str,
) -> None:
    # on PostgreSQL the fetch ran on the connection the pool had given the next request:
    # asyncpg's 'portal does not exist' failed that request's transaction (a 500)
    db = AsyncDatabase(async_db_url, pool_size=1, max_overflow=0)
    try:
        await db.create_all(Base.metadata)
        async with db.transaction() as session:
            session.add_all(Note(value=f"n{n:03}") for n in range(ROWS))
        failures: list[BaseException] = []

        async def streamed(request: Request) -> Response:
            statement = sa.select(Note.value).order_by(Note.id).execution_options(yield_per=5)
            result = await current_async_session().stream_scalars(statement)

            async def body() -> AsyncIterator[bytes]:
                try:
                    async for value in result:
                        await asyncio.sleep(0.005)  # the next request runs meanwhile
                        yield value.encode()
                except ResponseStartedError as error:
                    failures.append(error)

            return StreamingResponse(body())

        async def write(request: Request) -> Response:
            session = current_async_session()
            for n in range(5):
                session.add(Note(value=f"w{request.query_params['n']}-{n}"))
                await session.flush()
                await asyncio.sleep(0.01)
            return PlainTextResponse("written")

        routes = [Route("/stream", streamed), Route("/write", write, methods=["POST"])]
        app = Starlette(routes=routes, middleware=[Middleware(DatabaseMiddleware, db=db)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def writer(n: int) -> int:
                await asyncio.sleep(0.01 * n)
                return (await client.post("/write", params={"n": str(n)})).status_code

            async def reader() -> int:
                return (await client.get("/stream")).status_code

            statuses = await asyncio.gather(reader(), *(writer(n) for n in range(1, 4)))
        assert statuses == [200, 200, 200, 200]
        assert [type(f) for f in failures] == [ResponseStartedError]
        assert "server-side cursor" in str(failures[0])
        assert db.pool_stats()["checked_out"] == 0
    finally:
        await db.dispose()


async def test_a_sync_stream_reading_on_after_the_commit_is_refused(sync_db: Database) -> None:
    with sync_db.transaction() as session:
        session.add_all(Note(value=f"n{n:03}") for n in range(ROWS))
    failures: list[BaseException] = []

    def streamed(request: Request) -> Response:
        statement = sa.select(Note.value).order_by(Note.id).execution_options(yield_per=5)
        result = current_session().scalars(statement)

        def body() -> Iterator[bytes]:
            try:
                for value in result:
                    yield value.encode()
            except ResponseStartedError as error:
                failures.append(error)

        return StreamingResponse(body())

    app = Starlette(
        routes=[Route("/stream", streamed)],
        middleware=[Middleware(DatabaseMiddleware, db=sync_db)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/stream")
    assert response.status_code == 200
    assert [type(f) for f in failures] == [ResponseStartedError]
    assert sync_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("size", [None, 5])
async def test_a_result_read_before_the_response_starts_is_whole(
    size: int | None, async_db: AsyncDatabase
) -> None:
    await async_db.create_all(Base.metadata)

    async def listed(request: Request) -> Response:
        session = current_async_session()
        session.add_all(Note(value=f"n{n:03}") for n in range(ROWS))
        statement = sa.select(Note.value).order_by(Note.id)
        if size is not None:
            statement = statement.execution_options(yield_per=size)
        values = [value async for value in await session.stream_scalars(statement)]
        return PlainTextResponse(str(len(values)))

    app = Starlette(
        routes=[Route("/", listed)], middleware=[Middleware(DatabaseMiddleware, db=async_db)]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (200, str(ROWS))
    assert async_db.pool_stats()["checked_out"] == 0
