"""Who holds an AsyncDatabase's request transaction: the task running the request's
application (or an inner ``BaseHTTPMiddleware``'s, which runs it in turn), never a task the
request's code starts, even one asking before the endpoint's own first query, but the task
``asyncio.wait_for`` runs its coroutine in (before Python 3.12), which the endpoint waits for."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from dalkit import AsyncDatabase, AsyncUnitOfWork, TransactionError

from .models import Base, Note
from .test_application_tasks import application, post, values


@pytest.mark.parametrize("inner", [False, True], ids=["plain", "inner-middleware"])
@pytest.mark.parametrize("spawn", ["create_task", "gather"])
async def test_a_task_asking_before_the_endpoint_never_takes_the_request_transaction(
    spawn: str, inner: bool, async_db: AsyncDatabase
) -> None:
    # the first task of the request to join held its transaction: a task the endpoint started
    # before its own first query took it, and the endpoint was refused (a 500, nothing saved)
    await async_db.create_all(Base.metadata)
    refused: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def side(value: str) -> None:
        try:
            async with async_db.transaction() as session:
                session.add(Note(value=value))
                await session.flush()
        except TransactionError as error:
            refused.append(type(error).__name__)

    async def endpoint(request: Request) -> Response:
        if spawn == "create_task":
            tasks.append(asyncio.create_task(side("task")))
            await asyncio.sleep(0)  # the task runs first
        else:
            await asyncio.gather(side("a"), side("b"))
        async with AsyncUnitOfWork(async_db) as unit:
            unit.session.add(Note(value="request"))
        return PlainTextResponse("ok")

    response = await post(application(async_db, endpoint, inner=inner))
    await asyncio.gather(*tasks)
    assert response.status_code == 200
    assert refused == ["TransactionError"] * (1 if spawn == "create_task" else 2)
    assert await values(async_db) == ["request"]
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("inner", [False, True], ids=["plain", "inner-middleware"])
async def test_work_under_wait_for_and_after_it_joins_the_request_transaction(
    inner: bool, async_db: AsyncDatabase
) -> None:
    # refused while the task-holder fix lacked this: wait_for's task runs no application
    await async_db.create_all(Base.metadata)

    async def add(value: str) -> None:
        async with AsyncUnitOfWork(async_db) as unit:
            unit.session.add(Note(value=value))

    async def endpoint(request: Request) -> Response:
        value = request.query_params["value"]
        await asyncio.wait_for(add(f"{value}-timed"), 5)
        await add(value)  # the task wait_for ran has ended: the endpoint's own again
        return PlainTextResponse("ok", int(request.query_params.get("status", "200")))

    app = application(async_db, endpoint, inner=inner)
    assert (await post(app, value="kept")).status_code == 200
    undone = await post(app, value="undone", status="409")  # one transaction: all undone
    assert undone.status_code == 409
    assert await values(async_db) == ["kept", "kept-timed"]
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("inner", [False, True], ids=["plain", "inner-middleware"])
async def test_a_task_keeping_the_request_scope_in_a_local_named_scope_is_refused(
    inner: bool, async_db: AsyncDatabase
) -> None:
    # a frame with a variable named scope holding the request's scope counted as one running
    # the request's application: the task took the transaction, and the endpoint got a 500
    await async_db.create_all(Base.metadata)
    refused: list[str] = []

    async def side(request: Request) -> None:
        scope = request.scope  # the request's scope, in a local of the task's own code
        try:
            async with async_db.transaction() as session:
                session.add(Note(value=str(scope["path"])))
                await session.flush()
        except TransactionError as error:
            refused.append(type(error).__name__)

    async def endpoint(request: Request) -> Response:
        task = asyncio.create_task(side(request))
        await asyncio.sleep(0)  # the task asks first
        async with AsyncUnitOfWork(async_db) as unit:
            unit.session.add(Note(value="request"))
        await task
        return PlainTextResponse("ok")

    response = await post(application(async_db, endpoint, inner=inner))
    assert response.status_code == 200
    assert refused == ["TransactionError"]
    assert await values(async_db) == ["request"]
    assert async_db.pool_stats()["checked_out"] == 0
