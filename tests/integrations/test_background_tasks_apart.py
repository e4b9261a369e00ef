"""Each Starlette background task of a response runs in a transaction of its own: committed as
it returns (its writes are seen by the next task, and by everyone), rolled back when it raises,
which takes nothing of the tasks before it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.from_thread
import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from dalkit import AsyncDatabase, Database, current_async_session, current_session
from dalkit.integrations.asgi import DatabaseMiddleware

from .models import Base, Note
from .test_application_tasks import sync_values, values


async def respond_then_run(db: Database | AsyncDatabase, *functions: Callable[[], Any]) -> None:
    """POST to an endpoint answering 200 with ``functions`` as its background tasks."""
    tasks = BackgroundTasks()
    for function in functions:
        tasks.add_task(function)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=tasks)

    middleware = [Middleware(DatabaseMiddleware, db=db)]
    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])], middleware=middleware)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/")).status_code == 200


async def test_a_failing_background_task_takes_nothing_of_the_tasks_before_it(
    async_db: AsyncDatabase, observer: AsyncDatabase
) -> None:
    # one transaction held every task's work: the first one's write, which the second could
    # not see committed, rolled back when the second raised
    await async_db.create_all(Base.metadata)
    seen: list[list[str]] = []

    async def first() -> None:
        current_async_session().add(Note(value="first"))

    async def second() -> None:
        seen.append(await values(observer))  # committed for everyone once the first returned
        current_async_session().add(Note(value="second"))
        raise RuntimeError("the second task fails")

    await respond_then_run(async_db, first, second)
    assert seen == [["first"]]
    assert await values(async_db) == ["first"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_each_sync_background_task_commits_as_it_returns(
    sync_db: Database, observer: AsyncDatabase
) -> None:
    seen: list[list[str]] = []

    def first() -> None:
        current_session().add(Note(value="first"))

    def second() -> None:  # in a worker thread
        seen.append(anyio.from_thread.run(values, observer))
        current_session().add(Note(value="second"))
        raise RuntimeError("the second task fails")

    await respond_then_run(sync_db, first, second)
    assert seen == [["first"]]
    assert sync_values(sync_db) == ["first"]
    assert sync_db.pool_stats()["checked_out"] == 0
