"""What a Starlette background task starts (a task, a task group, a thread) is background work
too: run before the response reaches DatabaseMiddleware (a middleware inside it buffers the
body), it gets a transaction of its own, never the request's, which rolls back for the 409.
Run after it, under the background tasks' transaction, it follows the rule of the tasks the
request starts: beside the background task's own code (gather, a task group) an AsyncDatabase
refuses it that transaction (propagation='requires_new' gives one of its own); a sync
Database's joins it, and commits with it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.from_thread
import pytest
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from dalkit import (
    AsyncDatabase,
    Database,
    TransactionError,
    current_async_session,
    current_session,
)

from .models import Base, Note
from .test_application_tasks import application, post, sync_values, values
from .test_early_background import buffered

Work = Callable[[], Coroutine[Any, Any, None]]


async def in_a_task(work: Work) -> None:
    await asyncio.create_task(work())


async def in_a_task_group(work: Work) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(work)


async def in_gather(work: Work) -> None:
    await asyncio.gather(work())


async def in_wait_for(work: Work) -> None:
    await asyncio.wait_for(work(), 30)


STARTS = [in_a_task, in_a_task_group, in_gather, in_wait_for]


@pytest.mark.parametrize("start", STARTS)
async def test_tasks_a_background_task_starts_get_a_transaction_of_their_own(
    async_db: AsyncDatabase, start: Callable[[Work], Awaitable[None]]
) -> None:
    # they asked for the request's transaction: TransactionError (another task's)
    await async_db.create_all(Base.metadata)

    async def write() -> None:
        async with async_db.transaction() as session:
            session.add(Note(value="background"))

    async def endpoint(request: Request) -> Response:
        current_async_session()
        return PlainTextResponse("no", status_code=409, background=BackgroundTask(start, write))

    assert (await post(buffered(async_db, endpoint))).status_code == 409
    assert await values(async_db) == ["background"]
    assert async_db.pool_stats()["checked_out"] == 0


def sync_write(db: Database) -> None:
    with db.transaction() as session:
        session.add(Note(value="background"))


async def to_thread(db: Database) -> None:
    await asyncio.to_thread(sync_write, db)


def from_thread(db: Database) -> None:  # a sync background function, in a worker thread
    async def write() -> None:
        sync_write(db)

    anyio.from_thread.run(write)


async def starting(db: Database, start: Callable[[Work], Awaitable[None]]) -> None:
    async def write() -> None:
        sync_write(db)

    await start(write)


SYNC_PATHS = [
    pytest.param(to_thread, (), id="to_thread"),
    pytest.param(from_thread, (), id="from_thread"),
    *(pytest.param(starting, (start,), id=start.__name__) for start in STARTS),
]


@pytest.mark.parametrize(("path", "args"), SYNC_PATHS)
async def test_a_sync_database_gives_what_a_background_task_starts_its_own_transaction(
    sync_db: Database, path: Callable[..., object], args: tuple[object, ...]
) -> None:
    # they joined the request's transaction, and their write rolled back with it for the 409
    def endpoint(request: Request) -> Response:
        current_session()
        task = BackgroundTask(path, sync_db, *args)
        return PlainTextResponse("no", status_code=409, background=task)

    assert (await post(buffered(sync_db, endpoint))).status_code == 409  # type: ignore[arg-type]
    assert sync_values(sync_db) == ["background"]
    assert sync_db.pool_stats()["checked_out"] == 0


BESIDE = [in_a_task_group, in_gather]


@pytest.mark.parametrize("start", BESIDE)
async def test_tasks_beside_a_background_task_follow_the_rule_of_the_request_tasks(
    async_db: AsyncDatabase, start: Callable[[Work], Awaitable[None]]
) -> None:
    await async_db.create_all(Base.metadata)
    refused: list[str] = []

    async def write() -> None:
        try:
            async with async_db.transaction():
                pass  # pragma: no cover - refused: the background tasks' transaction
        except TransactionError as error:
            refused.append(str(error))
        async with async_db.transaction(propagation="requires_new") as session:
            session.add(Note(value="apart"))

    async def later() -> None:
        current_async_session()  # the background task holds its transaction
        await start(write)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    assert (await post(application(async_db, endpoint, inner=False))).status_code == 200
    assert len(refused) == 1
    assert "requires_new" in refused[0]
    assert await values(async_db) == ["apart"]
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("start", BESIDE)
async def test_a_sync_database_joins_tasks_beside_a_background_task_to_its_transaction(
    sync_db: Database, start: Callable[[Work], Awaitable[None]]
) -> None:
    sessions: list[object] = []

    async def write() -> None:
        with sync_db.transaction() as session:
            session.add(Note(value="joined"))
            sessions.append(session)

    async def later() -> None:
        sessions.append(current_session())
        await start(write)

    def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    app = application(sync_db, endpoint, inner=False)  # type: ignore[arg-type]
    assert (await post(app)).status_code == 200
    assert sessions[0] is sessions[1]
    assert sync_values(sync_db) == ["joined"]
