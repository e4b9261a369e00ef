"""A Starlette application per database flavour, for the middleware tests: each route does one
thing the middleware must get right (a write, a failing commit, a stream, a background task)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dalkit import AsyncDatabase, Database, current_async_session, current_session
from dalkit.audit import current_actor
from dalkit.integrations.asgi import DatabaseMiddleware, before_commit
from dalkit.integrations.errors import ResponseStartedError

from .models import Item, Note


class Probe:
    """What the application saw, for the test to check afterwards."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}
        self.written = asyncio.Event()
        self.release = asyncio.Event()


def async_app(db: AsyncDatabase, observer: AsyncDatabase, probe: Probe) -> Starlette:
    """``observer`` is a second Database on the same data: what it sees was committed."""

    async def note(request: Request) -> Response:
        value = request.query_params["value"]
        session = current_async_session()
        session.add(Note(value=value))
        await session.flush()
        status = int(request.query_params.get("status", "200"))
        mine = (await session.scalars(sa.select(Note.value).where(Note.value == value))).all()
        return JSONResponse({"values": list(mine)}, status_code=status)

    async def isolated(request: Request) -> Response:
        value = request.query_params["value"]
        session = current_async_session()
        session.add(Note(value=value))
        await session.flush()
        await asyncio.sleep(0.01)  # let the other requests write meanwhile
        seen = await session.scalars(sa.select(Note.value).where(Note.value.like("iso-%")))
        status = int(request.query_params.get("status", "200"))
        return JSONResponse({"seen": sorted(seen)}, status_code=status)

    async def orphan(request: Request) -> Response:
        session = current_async_session()
        session.add(Note(value=request.query_params["value"]))
        session.add(Item(owner_id=999_999))
        await session.flush()  # the foreign key is deferred: only COMMIT can fail
        return JSONResponse({"saved": True}, status_code=201)

    async def boom(request: Request) -> Response:
        current_async_session().add(Note(value=request.query_params["value"]))
        await current_async_session().flush()
        raise RuntimeError("the handler failed")

    async def stream(request: Request) -> Response:
        value = request.query_params["value"]
        session = current_async_session()
        session.add(Note(value=value))
        await session.flush()

        async def body() -> AsyncIterator[bytes]:
            yield b"first "
            async with observer.transaction() as other:
                found = await other.scalar(sa.select(sa.func.count()).where(Note.value == value))
            probe.seen["visible_after_first_byte"] = found
            try:
                session.add(Note(value=value + "-late"))
                await session.flush()
            except ResponseStartedError as error:
                probe.seen["late_write"] = type(error).__name__
            async with db.transaction() as own:  # a transaction of the stream's own
                own.add(Note(value=value + "-own"))
            yield b"last"

        return StreamingResponse(body(), media_type="text/plain")

    async def slow(request: Request) -> Response:
        current_async_session().add(Note(value=request.query_params["value"]))
        await current_async_session().flush()
        probe.written.set()
        await probe.release.wait()
        return PlainTextResponse("too late")

    async def background(request: Request) -> Response:
        value = request.query_params["value"]

        async def later() -> None:
            session = current_async_session()
            session.add(Note(value=value + "-background"))
            await session.flush()
            if request.query_params.get("fail"):
                raise RuntimeError("the background task failed")

        current_async_session().add(Note(value=value))
        return PlainTextResponse("ok", background=BackgroundTask(later))

    async def who(request: Request) -> Response:
        actor, request_id = current_actor()
        return JSONResponse({"actor": actor, "request_id": request_id})

    routes = [
        Route("/notes", note, methods=["POST"]),
        Route("/isolated", isolated, methods=["POST"]),
        Route("/orphans", orphan, methods=["POST"]),
        Route("/boom", boom, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/slow", slow, methods=["POST"]),
        Route("/background", background, methods=["POST"]),
        Route("/who", who),
    ]
    middleware = [Middleware(DatabaseMiddleware, db=db, actor="x-actor")]
    return Starlette(routes=routes, middleware=middleware)


def sync_app(db: Database) -> Starlette:
    """Sync endpoints on a sync Database: Starlette runs them in its thread pool."""

    def note(request: Request) -> Response:
        value = request.query_params["value"]
        session = current_session()
        session.add(Note(value=value))
        session.flush()
        status = int(request.query_params.get("status", "200"))
        return JSONResponse({"value": value}, status_code=status)

    def orphan(request: Request) -> Response:
        session = current_session()
        session.add(Note(value=request.query_params["value"]))
        session.add(Item(owner_id=999_999))
        session.flush()
        return JSONResponse({"saved": True}, status_code=201)

    def stream(request: Request) -> Response:
        session = current_session()
        session.add(Note(value=request.query_params["value"]))
        session.flush()

        def body() -> Iterator[bytes]:
            yield b"first "
            try:
                session.add(Note(value="late"))
            except ResponseStartedError:
                yield b"refused"

        return StreamingResponse(body())

    def joined(request: Request) -> Response:
        value = request.query_params["value"]
        with db.transaction() as session:  # joins the request's transaction, in this thread
            session.add(Note(value=value))
        with db.transaction(propagation="nested") as session:  # a savepoint of it
            session.add(Note(value=value + "-nested"))
        seen = db.sql("SELECT count(*) AS n FROM notes WHERE value LIKE :v", v=value + "%")
        status = int(request.query_params.get("status", "200"))
        body = {"same": session is current_session(), "seen": seen[0]["n"]}
        return JSONResponse(body, status_code=status)

    def hooked(request: Request) -> Response:
        value = request.query_params["value"]

        def add_late() -> None:  # runs in the committing thread, just before COMMIT
            current_session().add(Note(value=value + "-hook"))

        async def awaitable() -> None:  # a sync Database has no loop to await it on
            current_session().add(Note(value=value + "-never"))

        current_session().add(Note(value=value))
        hook = awaitable if request.query_params.get("hook") == "async" else add_late
        before_commit(request.scope, hook)
        return PlainTextResponse("ok")

    routes = [
        Route("/notes", note, methods=["POST"]),
        Route("/orphans", orphan, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/joined", joined, methods=["POST"]),
        Route("/hooked", hooked, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(DatabaseMiddleware, db=db)])


def post_scope(spec_version: str, extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ASGI scope of a ``POST /`` as a server of ``spec_version`` sends it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "extensions": extensions or {},
    }
