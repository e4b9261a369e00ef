"""No N+1 anywhere in Conduit, enforced by dalkit's detector rather than by counting: the app's
database runs with ``nplusone="raise"`` at the default threshold, and one scenario calls every
endpoint of the API with more rows than the threshold behind each list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute

from dalkit import AsyncDatabase, NPlusOneError

from .conduit_app import Article, create_app
from .conftest import SETTINGS, publish, register

#: more rows than the detector's default threshold (10) behind every list
ROWS = 12

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]


class RouteRecorder:
    """The application, noting which of its routes each HTTP request reached."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.reached: set[tuple[str, str]] = set()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        route = scope.get("route")
        if scope["type"] == "http" and isinstance(route, APIRoute):
            self.reached.add((scope["method"], route.path))


@pytest.fixture
async def recorded(
    conduit_db: AsyncDatabase,
) -> AsyncIterator[tuple[httpx.AsyncClient, RouteRecorder]]:
    recorder = RouteRecorder(create_app(conduit_db, SETTINGS))
    transport = httpx.ASGITransport(app=recorder)
    async with httpx.AsyncClient(transport=transport, base_url="http://conduit") as client:
        yield client, recorder


def every_route(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }


async def test_the_detector_raises_for_this_database(conduit_db: AsyncDatabase) -> None:
    with pytest.raises(NPlusOneError):
        async with conduit_db.transaction() as session:
            for n in range(ROWS):  # one statement shape, run once per "row"
                await session.scalar(sa.select(Article.id).where(Article.id == n))


async def test_every_endpoint_runs_without_n_plus_one_with_many_rows_behind_it(
    recorded: tuple[httpx.AsyncClient, RouteRecorder],
) -> None:
    api, recorder = recorded

    async def ok(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await api.request(method, path, **kwargs)
        assert response.status_code in (200, 201), f"{method} {path}: {response.text}"
        return response.json() if response.content else {}

    reader = await register(api, "reader")
    authors = [await register(api, f"author{n}") for n in range(ROWS)]
    slugs = []
    for n, author in enumerate(authors):
        tags = [f"tag{n}", f"tag{(n + 1) % ROWS}", "common"]
        slugs.append((await publish(api, author, f"Article {n}", tags))["slug"])
        await ok("POST", f"/api/profiles/author{n}/follow", headers=reader)
        await ok("POST", f"/api/articles/{slugs[-1]}/favorite", headers=reader)
        comment = {"comment": {"body": f"comment {n}"}}
        await ok("POST", f"/api/articles/{slugs[0]}/comments", json=comment, headers=author)

    # the lists, each with ROWS rows, as a reader who follows and favourites them all
    listed = await ok("GET", "/api/articles", params={"limit": "50"}, headers=reader)
    assert len(listed["articles"]) == ROWS
    assert all(a["favorited"] and a["author"]["following"] for a in listed["articles"])
    assert len((await ok("GET", "/api/articles/feed", headers=reader))["articles"]) == ROWS
    keyset = await ok("GET", "/api/articles/keyset", params={"tag": "common"}, headers=reader)
    assert len(keyset["articles"]) == ROWS
    comments = await ok("GET", f"/api/articles/{slugs[0]}/comments", headers=reader)
    assert len(comments["comments"]) == ROWS
    assert len((await ok("GET", "/api/tags"))["tags"]) == ROWS + 1
    await ok("GET", "/api/articles", params={"favorited": "reader"})
    await ok("GET", f"/api/articles/{slugs[1]}", headers=reader)
    await ok("GET", "/api/profiles/author1", headers=reader)

    # the rest of the API
    login = {"user": {"email": "reader@example.com", "password": "pw-reader"}}
    await ok("POST", "/api/users/login", json=login)
    await ok("GET", "/api/user", headers=reader)
    await ok("PUT", "/api/user", json={"user": {"bio": "reads"}}, headers=reader)
    author = authors[1]
    await ok("PUT", f"/api/articles/{slugs[1]}", json={"article": {"body": "x"}}, headers=author)
    await ok("DELETE", f"/api/articles/{slugs[1]}/favorite", headers=reader)
    await ok("DELETE", "/api/profiles/author1/follow", headers=reader)
    comment_id = comments["comments"][0]["id"]
    await ok("DELETE", f"/api/articles/{slugs[0]}/comments/{comment_id}", headers=authors[0])
    await ok("DELETE", f"/api/articles/{slugs[1]}", headers=author)

    missing = every_route(recorder.app) - recorder.reached
    assert not missing, f"endpoints the scenario did not call: {sorted(missing)}"
