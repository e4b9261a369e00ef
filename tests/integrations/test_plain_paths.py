"""The web integration keeps dalkit's plain reads and inserts (dalkit.query.plain_entities,
plain_inserts), and refuses them, as every other use of a request's session, once its
transaction has ended."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from dalkit import AsyncDatabase, AsyncRepository, current_async_session
from dalkit.integrations import _ending
from dalkit.integrations.errors import ResponseStartedError
from dalkit.query.plain_entities import _session_allows
from dalkit.query.plain_inserts import _insertable

from .models import Base, Owner
from .test_application_tasks import application, post


class Owners(AsyncRepository[Owner]):
    pass


async def owners(db: AsyncDatabase) -> list[int]:
    async with db.transaction() as session:
        return list(await session.scalars(sa.select(Owner.id).order_by(Owner.id)))


async def test_a_request_and_the_sessions_after_it_read_and_insert_plainly(
    async_db: AsyncDatabase,
) -> None:
    # the integration's listeners were not declared neutral: once it had served one request,
    # every repository read and insert of the process went the ORM's way (about 60 us a read)
    await async_db.create_all(Base.metadata)
    plain: list[bool] = []

    async def endpoint(request: Request) -> Response:
        session = current_async_session().sync_session
        plain.append(_insertable(session, [Owner()]) is Owner.__mapper__)
        plain.append(_session_allows(session, Owner.__mapper__))
        owner = await Owners(current_async_session()).add(Owner())
        return PlainTextResponse(str(owner.id))

    for _ in range(2):
        assert (await post(application(async_db, endpoint, inner=False))).status_code == 200
    async with async_db.transaction() as session:
        plain.append(_insertable(session.sync_session, [Owner()]) is Owner.__mapper__)
        plain.append(_session_allows(session.sync_session, Owner.__mapper__))
    assert plain == [True] * 6
    assert await owners(async_db) == [1, 2]


@pytest.mark.parametrize("operation", ["get", "add"])
async def test_a_task_the_request_did_not_await_is_refused_its_plain_read_or_insert(
    operation: str, async_db: AsyncDatabase
) -> None:
    await async_db.create_all(Base.metadata)
    tasks: list[asyncio.Task[object]] = []

    async def endpoint(request: Request) -> Response:
        repository = Owners(current_async_session())
        owner = await repository.add(Owner())

        async def outliving() -> object:
            await asyncio.sleep(0.05)  # after the request's transaction ended
            if operation == "get":
                return await repository.get(owner.id)
            return await repository.add(Owner())

        tasks.append(asyncio.create_task(outliving()))
        return PlainTextResponse("ok")

    assert (await post(application(async_db, endpoint, inner=False))).status_code == 200
    (task,) = tasks
    with pytest.raises(ResponseStartedError):
        await task
    assert await owners(async_db) == [1]
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("operation", ["get", "add"])
async def test_a_plain_read_or_insert_is_refused_while_another_task_ends_the_request(
    operation: str, async_db: AsyncDatabase
) -> None:
    # they run no ORM event: the integration hears of them through PLAIN_WATCH
    await async_db.create_all(Base.metadata)
    with pytest.raises(ResponseStartedError, match="transaction of its own"):
        async with async_db.transaction() as session:
            repository = Owners(session)
            owner = await repository.add(Owner())
            _ending.watch(session)
            session.sync_session.info[_ending._ENDING] = object()  # another task ends it
            if operation == "get":
                session.expunge(owner)
                await repository.get(owner.id)
            else:
                await repository.add(Owner())
    assert await owners(async_db) == []
