"""The middleware on bare ASGI applications: websocket and lifespan scopes pass through
untouched, and so does a request already under a middleware of the same database (a mounted
sub-application); the actor can come from the scope, before-commit hooks can veto the commit;
and importing dalkit imports no web framework."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from dalkit import (
    AsyncDatabase,
    ConfigurationError,
    Database,
    NoActiveTransactionError,
    current_async_session,
    current_session,
)
from dalkit.audit import current_actor
from dalkit.integrations.asgi import DatabaseMiddleware, before_commit
from dalkit.integrations.errors import ResponseStartedError

from .models import Base, Note


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_websocket_and_lifespan_scopes_pass_through_untouched(
    kind: str, async_db: AsyncDatabase
) -> None:
    seen: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": f"{kind}.connect"}

    async def send(message: Any) -> None:
        seen["sent"] = message

    async def app(scope: Any, app_receive: Any, app_send: Any) -> None:
        seen["same_channels"] = app_receive is receive and app_send is send
        try:
            current_async_session()
        except NoActiveTransactionError:
            seen["transaction"] = None
        await app_send({"type": "done"})

    scope = {"type": kind, "headers": []}
    await DatabaseMiddleware(app, async_db)(scope, receive, send)
    assert seen == {"same_channels": True, "transaction": None, "sent": {"type": "done"}}
    assert "state" not in scope
    assert async_db.pool_stats()["checked_out"] == 0


def test_importing_dalkit_and_its_middleware_imports_neither_starlette_nor_fastapi() -> None:
    code = (
        "import sys, dalkit, dalkit.integrations, dalkit.integrations.asgi\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'fastapi'))\n"
        "print(loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_middleware_refuses_something_that_is_not_a_database() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="expected a dalkit Database or AsyncDatabase"):
        DatabaseMiddleware(app, "sqlite:///app.db")  # type: ignore[arg-type]


async def test_the_actor_can_come_from_what_an_earlier_middleware_stored(
    async_db: AsyncDatabase,
) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["actor"] = current_actor()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    inner = DatabaseMiddleware(
        app, async_db, actor=lambda scope: scope["state"]["user_id"], request_id=None
    )

    async def authenticate(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["user_id"] = 42
        await inner(scope, receive, send)

    transport = httpx.ASGITransport(app=authenticate)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/", headers={"x-request-id": "ignored"})
    assert response.status_code == 204
    assert seen == {"actor": ("42", None)}


async def test_a_failing_before_commit_hook_turns_the_response_into_a_500(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)

    async def refuse() -> None:
        raise RuntimeError("the outbox is full")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        current_async_session().add(Note(value="hooked"))
        before_commit(scope, refuse)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"created"})

    transport = httpx.ASGITransport(app=DatabaseMiddleware(app, async_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/")
    assert response.status_code == 500
    async with async_db.transaction() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0
    assert async_db.pool_stats()["checked_out"] == 0


def mounted(db: Database | AsyncDatabase, endpoint: Any) -> Starlette:
    """``endpoint`` at ``/sub/``, in a sub-application with a DatabaseMiddleware of its own,
    mounted in an application with one too."""
    sub = Starlette(
        routes=[Route("/", endpoint, methods=["POST"])],
        middleware=[Middleware(DatabaseMiddleware, db=db)],
    )
    return Starlette(
        routes=[Mount("/sub", sub)], middleware=[Middleware(DatabaseMiddleware, db=db)]
    )


async def post_in_and_no(app: Starlette) -> list[int]:
    """POST ``in`` for a 201, then ``no`` for a 409; their statuses."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        kept = await client.post("/sub/", params={"value": "in", "status": 201})
        refused = await client.post("/sub/", params={"value": "no", "status": 409})
    return [kept.status_code, refused.status_code]


async def test_a_mounted_app_with_its_own_middleware_runs_in_the_request_transaction(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)

    async def endpoint(request: Request) -> Response:
        current_async_session().add(Note(value=request.query_params["value"]))
        return PlainTextResponse("", int(request.query_params["status"]))

    assert await post_in_and_no(mounted(async_db, endpoint)) == [201, 409]
    async with async_db.transaction() as session:
        assert list(await session.scalars(sa.select(Note.value))) == ["in"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_mounted_app_with_its_own_middleware_runs_in_the_request_transaction_sync(
    db: Database,
) -> None:
    db.create_all(Base.metadata)

    def endpoint(request: Request) -> Response:
        current_session().add(Note(value=request.query_params["value"]))
        return PlainTextResponse("", int(request.query_params["status"]))

    assert await post_in_and_no(mounted(db, endpoint)) == [201, 409]
    with db.transaction() as session:
        assert list(session.scalars(sa.select(Note.value))) == ["in"]
    assert db.pool_stats()["checked_out"] == 0


async def test_a_rollback_for_that_raises_rolls_back_and_returns_the_connection(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        current_async_session().add(Note(value="undecided"))
        await current_async_session().flush()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def refuses(status: int) -> bool:
        raise LookupError(f"no rule for {status}")

    middleware = DatabaseMiddleware(app, async_db, rollback_for=refuses)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(LookupError, match="no rule for 201"):
            await client.post("/")
    async with async_db.transaction() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0
    assert async_db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("join", ["current_async_session", "transaction"])
async def test_a_before_commit_hook_joins_the_request_transaction(
    join: str, async_db: AsyncDatabase
) -> None:
    # the hooks run in the task ending the transaction, which the request's holder refused:
    # TransactionError, the commit failed and the client got a 500 (a sync Database's joined)
    await async_db.create_all(Base.metadata)

    async def hook() -> None:
        if join == "current_async_session":
            current_async_session().add(Note(value="hook"))
        else:
            async with async_db.transaction() as session:
                session.add(Note(value="hook"))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        current_async_session().add(Note(value="request"))
        before_commit(scope, hook)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"created"})

    transport = httpx.ASGITransport(app=DatabaseMiddleware(app, async_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/")
    assert response.status_code == 201
    async with async_db.transaction() as session:
        assert sorted(await session.scalars(sa.select(Note.value))) == ["hook", "request"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_hook_registered_after_the_response_started_is_refused(
    async_db: AsyncDatabase,
) -> None:
    # it was kept in a list nobody read again: the hook never ran, and nothing said so
    refused: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:  # a streaming body, or a background task
            before_commit(scope, lambda: None)
        except ResponseStartedError as error:
            refused.append(type(error))
        await send({"type": "http.response.body", "body": b"streamed"})

    transport = httpx.ASGITransport(app=DatabaseMiddleware(app, async_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).text == "streamed"
    assert refused == [ResponseStartedError]
