"""DatabaseMiddleware on an AsyncDatabase: commit before the response starts, roll back for
errors, never a 2xx for data that was not saved."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, current_async_session
from dalkit.audit import AuditActorError, current_actor
from dalkit.integrations.asgi import DatabaseMiddleware

from .apps import Probe
from .models import Base, Note, Owner


async def stored(observer: AsyncDatabase, value: str) -> int:
    async with observer.transaction() as session:
        count = await session.scalar(sa.select(sa.func.count()).where(Note.value == value))
    return int(count or 0)


async def test_a_successful_request_is_committed_before_the_client_sees_it(
    client: httpx.AsyncClient, observer: AsyncDatabase
) -> None:
    response = await client.post("/notes", params={"value": "kept"})
    assert response.status_code == 200
    assert response.json() == {"values": ["kept"]}
    assert await stored(observer, "kept") == 1


async def test_a_commit_that_fails_gives_a_500_problem_and_saves_nothing(
    client: httpx.AsyncClient, observer: AsyncDatabase, async_db: AsyncDatabase
) -> None:
    response = await client.post("/orphans", params={"value": "orphaned"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "the changes of this request could not be saved",
    }
    assert await stored(observer, "orphaned") == 0
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_4xx_response_rolls_the_request_back(
    client: httpx.AsyncClient, observer: AsyncDatabase
) -> None:
    response = await client.post("/notes", params={"value": "refused", "status": "422"})
    assert response.status_code == 422
    assert response.json() == {"values": ["refused"]}  # the handler saw its own write
    assert await stored(observer, "refused") == 0


async def test_an_unhandled_error_rolls_back_and_answers_500(
    client: httpx.AsyncClient, observer: AsyncDatabase, async_db: AsyncDatabase
) -> None:
    transport = httpx.ASGITransport(app=client._transport.app, raise_app_exceptions=False)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/boom", params={"value": "exploded"})
    assert response.status_code == 500
    assert await stored(observer, "exploded") == 0
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_stream_commits_before_its_first_byte_and_refuses_later_writes_on_it(
    client: httpx.AsyncClient, observer: AsyncDatabase, probe: Probe
) -> None:
    response = await client.post("/stream", params={"value": "streamed"})
    assert response.status_code == 200
    assert response.text == "first last"
    assert probe.seen == {"visible_after_first_byte": 1, "late_write": "ResponseStartedError"}
    assert await stored(observer, "streamed") == 1
    assert await stored(observer, "streamed-late") == 0
    assert await stored(observer, "streamed-own") == 1


async def test_background_tasks_get_a_transaction_of_their_own(
    client: httpx.AsyncClient, observer: AsyncDatabase, async_db: AsyncDatabase
) -> None:
    ok = await client.post("/background", params={"value": "bg-ok"})
    assert ok.status_code == 200
    assert await stored(observer, "bg-ok") == 1
    assert await stored(observer, "bg-ok-background") == 1

    transport = httpx.ASGITransport(app=client._transport.app, raise_app_exceptions=False)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        failed = await http.post("/background", params={"value": "bg-fail", "fail": "1"})
    assert failed.status_code == 200
    assert await stored(observer, "bg-fail") == 1  # the request's own work stands
    assert await stored(observer, "bg-fail-background") == 0
    assert async_db.pool_stats()["checked_out"] == 0


async def test_the_actor_and_request_id_come_from_the_request_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/who", headers={"x-actor": "user-7", "x-request-id": "r-1"})
    assert response.json() == {"actor": "user-7", "request_id": "r-1"}
    anonymous = await client.get("/who")
    assert anonymous.json() == {"actor": None, "request_id": None}


async def test_a_header_longer_than_the_audit_log_keeps_is_cut_not_refused(
    client: httpx.AsyncClient,
) -> None:
    # the client's text: a long request id must not refuse the request's audited writes
    long = "r" * 150 + "x" * 850
    response = await client.get("/who", headers={"x-actor": "a" * 300, "x-request-id": long})
    assert response.status_code == 200
    assert response.json() == {"actor": "a" * 200, "request_id": long[:200]}


async def test_an_actor_function_too_long_for_the_audit_log_refuses_only_audited_writes(
    async_db: AsyncDatabase, observer: AsyncDatabase
) -> None:
    # every request of that user (a long email, say) was a 500, its reads too
    await async_db.create_all(Base.metadata)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = current_async_session()
        status = 200
        if scope["path"] == "/owner":
            session.add(Owner(id=7))  # not audited
        elif scope["path"] == "/note":
            session.add(Note(value="misnamed"))
            try:
                await session.flush()
            except AuditActorError as error:
                status = 500 if "at most 200" in str(error) else 418
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = DatabaseMiddleware(app, async_db, actor=lambda scope: "u" * 201)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.post(path)).status_code for path in ("/read", "/owner", "/note")]
    assert statuses == [200, 200, 500]
    assert await stored(observer, "misnamed") == 0
    async with observer.transaction() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Owner)) == 1


async def test_an_async_actor_function_is_awaited(async_db: AsyncDatabase) -> None:
    # its coroutine was recorded as the actor: '<coroutine object ...>' in the audit log
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = repr(current_actor()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def actor(scope: Any) -> str:
        return "user-7"

    async def request_id(scope: Any) -> str:
        return "r-1"

    middleware = DatabaseMiddleware(app, async_db, actor=actor, request_id=request_id)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert response.text == "('user-7', 'r-1')"


async def test_an_async_rollback_for_is_awaited(
    async_db: AsyncDatabase, observer: AsyncDatabase
) -> None:
    # its coroutine is true: every request rolled back, and answered its 2xx all the same
    await async_db.create_all(Base.metadata)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        current_async_session().add(Note(value=scope["path"].strip("/")))
        status = 201 if scope["path"] == "/kept" else 503
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def server_errors(status: int) -> bool:
        return status >= 500

    middleware = DatabaseMiddleware(app, async_db, rollback_for=server_errors)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.post(path)).status_code for path in ("/kept", "/dropped")]
    assert statuses == [201, 503]
    assert (await stored(observer, "kept"), await stored(observer, "dropped")) == (1, 0)


async def test_concurrent_requests_each_see_only_their_own_transaction(
    client: httpx.AsyncClient, observer: AsyncDatabase, async_db: AsyncDatabase
) -> None:
    # every other request is rolled back: nobody may ever see its value but itself
    values = [f"iso-{n}" for n in range(200)]
    rolled_back = {v for n, v in enumerate(values) if n % 2}

    async def one(value: str) -> tuple[str, httpx.Response]:
        status = "400" if value in rolled_back else "200"
        return value, await client.post("/isolated", params={"value": value, "status": status})

    results = await asyncio.gather(*(one(v) for v in values))
    for value, response in results:
        assert response.status_code == (400 if value in rolled_back else 200)
        seen = set(response.json()["seen"])
        assert value in seen  # its own write, before it commits
        assert seen & rolled_back <= {value}  # never another request's uncommitted write
    async with observer.transaction() as session:
        saved = set(await session.scalars(sa.select(Note.value).where(Note.value.like("iso-%"))))
    assert saved == set(values) - rolled_back
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_cancelled_request_rolls_back_and_returns_its_connection(
    client: httpx.AsyncClient, observer: AsyncDatabase, async_db: AsyncDatabase, probe: Probe
) -> None:
    request = asyncio.create_task(client.post("/slow", params={"value": "abandoned"}))
    await asyncio.wait_for(probe.written.wait(), timeout=10)
    assert async_db.pool_stats()["checked_out"] == 1  # the request holds its connection
    request.cancel()  # what a server does when the client goes away
    done, _ = await asyncio.wait({request}, timeout=10)
    assert request in done
    assert request.cancelled()
    assert await stored(observer, "abandoned") == 0
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_connection_lost_at_commit_answers_that_the_outcome_is_unknown(
    async_db: AsyncDatabase, observer: AsyncDatabase
) -> None:
    # the server kills the request's connection just before COMMIT: nothing was saved, but
    # the client cannot be told so (a COMMIT that broke may have committed)
    if async_db.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL backend is killed")
    await async_db.create_all(Base.metadata)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = current_async_session()
        session.add(Note(value="cut-off"))
        pid = await session.scalar(sa.text("SELECT pg_backend_pid()"))
        async with observer.transaction() as other:
            await other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"created"})

    transport = httpx.ASGITransport(app=DatabaseMiddleware(app, async_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/")
    assert response.status_code == 500
    assert response.json()["outcome"] == "unknown"
    assert "unknown" in response.json()["detail"]
    assert await stored(observer, "cut-off") == 0
    assert async_db.pool_stats()["checked_out"] == 0
