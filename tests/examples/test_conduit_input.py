"""Client input the database would refuse is refused first, with the spec's 422 error body
rather than a 500: offsets past dalkit's pagination bound (PostgreSQL's OFFSET is a bigint),
text longer than its column (PostgreSQL checks the length, SQLite does not), and nulls for
fields whose columns are NOT NULL. The longest values the columns hold still go through."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dalkit.query.pagination import MAX_OFFSET

from .conftest import publish, register


def errors(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    body: list[str] = response.json()["errors"]["body"]
    return body


@pytest.mark.parametrize("path", ["/api/articles", "/api/articles/feed"])
async def test_offsets_past_the_pagination_bound_are_refused(
    api: httpx.AsyncClient, path: str
) -> None:
    auth = await register(api, "ann")
    deepest = await api.get(path, params={"offset": str(MAX_OFFSET)}, headers=auth)
    assert deepest.status_code == 200, deepest.text
    assert deepest.json() == {"articles": [], "articlesCount": 0}
    for offset in (MAX_OFFSET + 1, 10**19):
        refused = await api.get(path, params={"offset": str(offset)}, headers=auth)
        assert errors(refused) == [f"offset: Input should be less than or equal to {MAX_OFFSET}"]


@pytest.mark.parametrize("field", ["email", "username", "password", "bio"])
async def test_a_null_for_a_user_field_that_cannot_be_null_is_refused(
    api: httpx.AsyncClient, field: str
) -> None:
    auth = await register(api, "ann")
    refused = await api.put("/api/user", json={"user": {field: None}}, headers=auth)
    assert errors(refused) == [f"{field} can't be null"]
    user = (await api.get("/api/user", headers=auth)).json()["user"]
    assert (user["email"], user["username"], user["bio"]) == ("ann@example.com", "ann", "")
    login = {"user": {"email": "ann@example.com", "password": "pw-ann"}}
    assert (await api.post("/api/users/login", json=login)).status_code == 200


async def test_a_null_image_clears_it(api: httpx.AsyncClient) -> None:
    auth = await register(api, "ann")
    await api.put("/api/user", json={"user": {"image": "me.png"}}, headers=auth)
    cleared = await api.put("/api/user", json={"user": {"image": None}}, headers=auth)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["user"]["image"] is None


def new_user(username: str, email: str) -> dict[str, Any]:
    return {"user": {"username": username, "email": email, "password": "pw"}}


async def test_user_fields_longer_than_their_columns_are_refused(api: httpx.AsyncClient) -> None:
    too_long = await api.post("/api/users", json=new_user("u" * 65, "u@example.com"))
    assert errors(too_long) == ["username is too long (at most 64 characters)"]
    long_email = "e" * 243 + "@example.com"  # 255 characters
    assert errors(await api.post("/api/users", json=new_user("u", long_email))) == [
        "email is too long (at most 254 characters)"
    ]
    longest = await api.post("/api/users", json=new_user("u" * 64, long_email[1:]))
    assert longest.status_code == 201, longest.text
    auth = {"Authorization": f"Token {longest.json()['user']['token']}"}

    for field, length in (("username", 64), ("image", 1000)):
        value = "v" * (length + 1)
        refused = await api.put("/api/user", json={"user": {field: value}}, headers=auth)
        assert errors(refused) == [f"{field} is too long (at most {length} characters)"]
        accepted = await api.put("/api/user", json={"user": {field: value[1:]}}, headers=auth)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["user"][field] == value[1:]


async def test_titles_and_tags_longer_than_their_columns_are_refused(
    api: httpx.AsyncClient,
) -> None:
    auth = await register(api, "ann")

    def article(title: str, tags: list[str]) -> dict[str, Any]:
        return {"article": {"title": title, "description": "d", "body": "b", "tagList": tags}}

    refused = await api.post("/api/articles", json=article("t" * 256, ["g" * 65]), headers=auth)
    assert errors(refused) == [
        "title is too long (at most 255 characters)",
        "tagList is too long (at most 64 characters)",
    ]
    longest = await publish(api, auth, "t" * 255, ["g" * 64])
    assert (len(longest["title"]), longest["tagList"]) == (255, ["g" * 64])

    path = f"/api/articles/{longest['slug']}"
    renamed = await api.put(path, json={"article": {"title": "r" * 256}}, headers=auth)
    assert errors(renamed) == ["title is too long (at most 255 characters)"]
    assert (await api.get(path)).json()["article"]["title"] == "t" * 255
