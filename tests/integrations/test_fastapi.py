"""The FastAPI dependencies and error handlers on the request's transaction: repositories,
paging and filters checked against the repository's allow-lists, and dalkit errors as
problem+json responses with the statuses the issue names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.responses import JSONResponse, Response

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    AsyncUnitOfWork,
    LockNotAvailableError,
    NotFoundError,
    PoolTimeoutError,
    StatementTimeoutError,
    TransactionError,
)
from dalkit.audit import current_actor
from dalkit.integrations.asgi import DatabaseMiddleware
from dalkit.integrations.fastapi import (
    CursorParams,
    PageParams,
    async_session,
    cursor_pagination,
    filters,
    install_error_handlers,
    pagination,
    repository,
    unit_of_work,
)


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(80), unique=True)
    name: Mapped[str] = mapped_column(sa.String(80))


class MemberRepository(AsyncRepository[Member]):
    filterable = ("email", "name")
    sortable = ("name", "id")
    max_page_size = 50
    cursor_secret = "cursor-secret-for-the-tests"


Members = Annotated[MemberRepository, Depends(repository(MemberRepository))]


def build_app(db: AsyncDatabase, status: dict[type[Exception], int] | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, db=db)
    install_error_handlers(app, status=status, retry_after_s=7)

    @app.get("/members")
    async def list_members(
        members: Members,
        page: Annotated[PageParams, Depends(pagination())],
        where: Annotated[dict[str, Any], Depends(filters())],
    ) -> dict[str, Any]:
        found = await members.paginate(**page.as_kwargs(), **where)
        return {"names": [m.name for m in found.items], "total": found.total}

    @app.get("/members/by-cursor")
    async def by_cursor(
        members: Members, window: Annotated[CursorParams, Depends(cursor_pagination(2))]
    ) -> dict[str, Any]:
        found = await members.paginate_cursor(**window.as_kwargs())
        return {"names": [m.name for m in found.items], "next": found.next_cursor}

    @app.get("/members/{ident}")
    async def get_member(ident: int, members: Members) -> dict[str, Any]:
        member = await members.get(ident)
        return {"name": member.name}

    @app.post("/members", status_code=201)
    async def add_member(email: str, name: str, members: Members) -> dict[str, Any]:
        member = await members.add(Member(email=email, name=name))
        return {"id": member.id}

    @app.post("/members/with-unit", status_code=201)
    async def add_with_unit(
        email: str,
        unit: Annotated[AsyncUnitOfWork, Depends(unit_of_work(), scope="function")],
        session: Annotated[AsyncSession, Depends(async_session)],
    ) -> dict[str, Any]:
        member = await unit.repository(MemberRepository).add(Member(email=email, name="unit"))
        return {"joined": unit.joined and unit.session is session, "id": member.id}

    @app.post("/members/with-late-unit", status_code=201)
    async def add_with_late_unit(
        email: str, unit: Annotated[AsyncUnitOfWork, Depends(unit_of_work())]
    ) -> dict[str, Any]:
        member = await unit.repository(MemberRepository).add(Member(email=email, name="late"))
        return {"id": member.id}

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeoutError(5, 10, 30_000.0)

    @app.get("/slow")
    async def slow() -> None:
        raise StatementTimeoutError("canceling statement due to statement timeout")

    @app.get("/locked")
    async def locked() -> None:
        raise LockNotAvailableError('could not obtain lock on row in relation "members"')

    return app


@pytest.fixture
async def http(async_db: AsyncDatabase) -> AsyncIterator[httpx.AsyncClient]:
    await async_db.create_all(Base.metadata)
    transport = httpx.ASGITransport(app=build_app(async_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for n, name in enumerate(["cleo", "ada", "bob"]):
            response = await client.post("/members", params={"email": f"{n}@x.io", "name": name})
            assert response.status_code == 201
        yield client


async def test_filters_and_paging_reach_the_repository(http: httpx.AsyncClient) -> None:
    response = await http.get("/members", params={"sort": "name", "per_page": "2"})
    assert response.json() == {"names": ["ada", "bob"], "total": 3}
    response = await http.get("/members", params={"name__startswith": "c"})
    assert response.json() == {"names": ["cleo"], "total": 1}


async def test_an_unknown_filter_is_a_400_listing_the_allowed_fields(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/members", params={"password": "x"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["name"] == "password"
    assert body["allowed"] == ["email", "name"]


async def test_paging_outside_the_repository_bounds_is_a_400(http: httpx.AsyncClient) -> None:
    too_big = await http.get("/members", params={"per_page": "51"})
    assert too_big.status_code == 400
    assert too_big.json()["name"] == "per_page"
    bad_sort = await http.get("/members", params={"sort": "email"})
    assert bad_sort.status_code == 400
    assert bad_sort.json()["allowed"] == ["id", "name"]


async def test_keyset_pages_follow_their_cursor(http: httpx.AsyncClient) -> None:
    first = (await http.get("/members/by-cursor", params={"sort": "name"})).json()
    assert first["names"] == ["ada", "bob"]
    second = await http.get("/members/by-cursor", params={"sort": "name", "after": first["next"]})
    assert second.json() == {"names": ["cleo"], "next": None}
    forged = await http.get("/members/by-cursor", params={"after": "forged"})
    assert forged.status_code == 400


async def test_dalkit_errors_map_onto_http_statuses(http: httpx.AsyncClient) -> None:
    missing = await http.get("/members/999")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no Member with primary key 999"
    duplicate = await http.post("/members", params={"email": "0@x.io", "name": "again"})
    assert duplicate.status_code == 409
    assert duplicate.json()["detail"] == "a row with these values exists already"
    busy = await http.get("/busy")
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "7"
    slow = await http.get("/slow")
    assert slow.status_code == 504
    locked = await http.get("/locked")  # NOWAIT or lock_timeout: in use, try again shortly
    assert (locked.status_code, locked.headers["retry-after"]) == (503, "7")
    assert "members" not in locked.json()["detail"]


async def test_the_status_mapping_is_configurable(async_db: AsyncDatabase) -> None:
    await async_db.create_all(Base.metadata)
    app = build_app(async_db, status={NotFoundError: 410, StatementTimeoutError: 0})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/members/1")).status_code == 410
        assert (await client.get("/slow")).status_code == 500  # no handler any more


async def test_a_unit_of_work_dependency_joins_the_request_transaction(
    http: httpx.AsyncClient, async_db: AsyncDatabase
) -> None:
    response = await http.post("/members/with-unit", params={"email": "unit@x.io"})
    assert response.status_code == 201
    assert response.json()["joined"] is True
    async with async_db.transaction() as session:
        stored = await session.scalar(sa.select(Member.email).where(Member.email == "unit@x.io"))
    assert stored == "unit@x.io"


async def test_a_unit_of_work_ending_after_the_response_still_commits_with_the_request(
    http: httpx.AsyncClient, async_db: AsyncDatabase
) -> None:
    response = await http.post("/members/with-late-unit", params={"email": "late@x.io"})
    assert response.status_code == 201
    async with async_db.transaction() as session:
        stored = await session.scalar(sa.select(Member.email).where(Member.email == "late@x.io"))
    assert stored == "late@x.io"
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_unit_of_work_dependency_awaits_an_async_actor_function(
    async_db: AsyncDatabase,
) -> None:
    # its coroutine was the unit's actor: '<coroutine object ...>' in the audit log
    async def signed_in(request: Request) -> str:
        return request.headers["x-user"]

    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, db=async_db)
    unit_dependency = Depends(unit_of_work(actor=signed_in), scope="function")

    @app.get("/who")
    async def who(unit: AsyncUnitOfWork = unit_dependency) -> list[str | None]:
        return list(current_actor())

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/who", headers={"x-user": "user-7"})
    assert response.json() == ["user-7", None]


async def test_an_async_render_is_awaited(async_db: AsyncDatabase) -> None:
    # its coroutine was taken for the response: a TypeError, so a 500, for every mapped error
    async def render(request: Request, error: Exception, status: int) -> Response:
        return JSONResponse({"errors": [type(error).__name__]}, status_code=status)

    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, db=async_db)
    install_error_handlers(app, render=render, retry_after_s=7)

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeoutError(5, 10, 30_000.0)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/busy")
    assert (response.status_code, response.json()) == (503, {"errors": ["PoolTimeoutError"]})
    assert response.headers["retry-after"] == "7"


async def test_a_task_a_dependency_starts_never_takes_the_request_transaction(
    async_db: AsyncDatabase,
) -> None:
    # it joined first, so it held the request's transaction: the endpoint's own dependencies
    # were refused (a 500), and the task's write went with the request's
    await async_db.create_all(Base.metadata)
    refused: list[BaseException] = []
    tasks: list[asyncio.Task[None]] = []

    async def elsewhere() -> None:
        try:
            async with async_db.transaction() as session:
                session.add(Member(email="task@x.io", name="task"))
                await session.flush()
        except TransactionError as error:
            refused.append(error)

    async def starting() -> None:
        tasks.append(asyncio.create_task(elsewhere()))
        await asyncio.sleep(0)  # the task runs first

    app = build_app(async_db)

    @app.post("/started", status_code=201, dependencies=[Depends(starting)])
    async def started(
        members: Members,
        unit: Annotated[AsyncUnitOfWork, Depends(unit_of_work(), scope="function")],
    ) -> dict[str, Any]:
        await members.add(Member(email="endpoint@x.io", name="endpoint"))
        await unit.repository(MemberRepository).add(Member(email="unit@x.io", name="unit"))
        return {}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/started")
    await asyncio.gather(*tasks)
    assert response.status_code == 201
    assert [type(error) for error in refused] == [TransactionError]
    async with async_db.transaction() as session:
        stored = sorted(await session.scalars(sa.select(Member.email)))
    assert stored == ["endpoint@x.io", "unit@x.io"]


async def test_a_test_overrides_the_dependencies_by_calling_their_factories_again(
    async_db: AsyncDatabase,
) -> None:
    # each call made a new dependency: the overrides, keyed by new ones, were ignored, and the
    # test ran on the real repository and paging
    app = build_app(async_db)

    class Fake:
        async def paginate_cursor(self, **window: Any) -> Any:
            return type("Page", (), {"items": [], "next_cursor": repr(window)})()

    app.dependency_overrides[repository(MemberRepository)] = Fake
    app.dependency_overrides[cursor_pagination(default_limit=2)] = lambda: CursorParams(
        9, None, None, None
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/members/by-cursor")
    window = {"limit": 9, "after": None, "before": None, "sort": None}
    assert response.json()["next"] == repr(window)
    assert filters(["name"]) is filters(allowed=["name"]) is not filters(["email"])
    assert unit_of_work() is unit_of_work(outbox=None) is not unit_of_work(outbox=True)
    assert pagination() is pagination(20)
