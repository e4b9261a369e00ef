"""Conduit's articles, feed, favourites, comments and tags through the API: shapes, filters,
pagination (offset per the spec, keyset as the extension), permissions and error bodies."""

from __future__ import annotations

import re

import httpx

from .conftest import publish, register

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_an_article_has_the_spec_shape(api: httpx.AsyncClient) -> None:
    auth = await register(api, "jake")
    article = await publish(api, auth, "How to train your dragon", ["dragons", "training"])
    assert set(article) == {
        "slug",
        "title",
        "description",
        "body",
        "tagList",
        "createdAt",
        "updatedAt",
        "favorited",
        "favoritesCount",
        "author",
    }
    assert article["slug"].startswith("how-to-train-your-dragon-")
    assert article["tagList"] == ["dragons", "training"]
    assert TIME.fullmatch(article["createdAt"])
    assert TIME.fullmatch(article["updatedAt"])
    assert (article["favorited"], article["favoritesCount"]) == (False, 0)
    assert article["author"] == {"username": "jake", "bio": "", "image": None, "following": False}
    fetched = await api.get(f"/api/articles/{article['slug']}")
    assert fetched.status_code == 200
    assert fetched.json() == {"article": article}


async def test_creating_an_article_needs_a_user_and_a_complete_body(
    api: httpx.AsyncClient,
) -> None:
    anonymous = await api.post("/api/articles", json={"article": {"title": "t"}})
    assert anonymous.status_code == 401
    auth = await register(api, "jake")
    incomplete = await api.post("/api/articles", json={"article": {"title": ""}}, headers=auth)
    assert incomplete.status_code == 422
    assert incomplete.json() == {
        "errors": {"body": ["title can't be empty", "description is missing", "body is missing"]}
    }


async def test_listing_filters_by_tag_author_and_favorited(api: httpx.AsyncClient) -> None:
    ann, bob = await register(api, "ann"), await register(api, "bob")
    first = await publish(api, ann, "First", ["a"])
    await publish(api, ann, "Second", ["b"])
    third = await publish(api, bob, "Third", ["a", "b"])
    await api.post(f"/api/articles/{first['slug']}/favorite", headers=bob)

    async def titles(**params: str) -> list[str]:
        response = await api.get("/api/articles", params=params)
        assert response.status_code == 200
        body = response.json()
        assert body["articlesCount"] >= len(body["articles"])
        return [a["title"] for a in body["articles"]]

    assert await titles() == ["Third", "Second", "First"]
    assert await titles(tag="a") == ["Third", "First"]
    assert await titles(author="ann") == ["Second", "First"]
    assert await titles(favorited="bob") == ["First"]
    assert await titles(tag="b", author="bob") == [third["title"]]
    assert await titles(tag="missing") == []
    assert await titles(limit="1", offset="1") == ["Second"]
    counted = (await api.get("/api/articles", params={"limit": "1"})).json()
    assert counted["articlesCount"] == 3


async def test_unknown_listing_parameters_are_a_400_naming_the_allowed_ones(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/api/articles", params={"writer": "ann"})
    assert response.status_code == 400
    assert response.json() == {
        "errors": {
            "body": [
                "unknown or disallowed filter 'writer'; "
                "allowed: author, favorited, limit, offset, tag"
            ]
        }
    }
    too_many = await api.get("/api/articles", params={"limit": "1000"})
    assert too_many.status_code == 422


async def test_the_keyset_extension_pages_without_gaps(api: httpx.AsyncClient) -> None:
    auth = await register(api, "ann")
    for n in range(5):
        await publish(api, auth, f"Post {n}", ["even" if n % 2 == 0 else "odd"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"after": cursor} if cursor else {})
        page = (await api.get("/api/articles/keyset", params=params)).json()
        seen += [a["title"] for a in page["articles"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"Post {n}" for n in range(4, -1, -1)]
    even = (await api.get("/api/articles/keyset", params={"tag": "even"})).json()
    assert [a["title"] for a in even["articles"]] == ["Post 4", "Post 2", "Post 0"]
    forged = await api.get("/api/articles/keyset", params={"after": "not-a-cursor"})
    assert forged.status_code == 400


async def test_the_feed_shows_followed_authors_only(api: httpx.AsyncClient) -> None:
    ann, bob, cy = await register(api, "ann"), await register(api, "bob"), await register(api, "cy")
    await publish(api, bob, "By bob")
    await publish(api, cy, "By cy")
    await api.post("/api/profiles/bob/follow", headers=ann)
    feed = await api.get("/api/articles/feed", headers=ann)
    assert feed.status_code == 200
    body = feed.json()
    assert [a["title"] for a in body["articles"]] == ["By bob"]
    assert body["articlesCount"] == 1
    assert body["articles"][0]["author"]["following"] is True
    assert (await api.get("/api/articles/feed")).status_code == 401


async def test_only_the_author_may_update_or_delete(api: httpx.AsyncClient) -> None:
    ann, bob = await register(api, "ann"), await register(api, "bob")
    article = await publish(api, ann, "Original")
    slug = article["slug"]
    change = {"article": {"title": "Renamed", "body": "new body"}}
    refused = await api.put(f"/api/articles/{slug}", json=change, headers=bob)
    assert refused.status_code == 403
    assert refused.json() == {"errors": {"body": ["only the author may change this article"]}}
    updated = await api.put(f"/api/articles/{slug}", json=change, headers=ann)
    assert updated.status_code == 200
    renamed = updated.json()["article"]
    assert (renamed["title"], renamed["body"]) == ("Renamed", "new body")
    assert renamed["slug"].startswith("renamed-")
    assert (await api.get(f"/api/articles/{slug}")).status_code == 404
    assert (await api.delete(f"/api/articles/{renamed['slug']}", headers=bob)).status_code == 403
    deleted = await api.delete(f"/api/articles/{renamed['slug']}", headers=ann)
    assert deleted.status_code == 200
    missing = await api.get(f"/api/articles/{renamed['slug']}")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"body": ["article not found"]}}


async def test_favourites_count_per_user(api: httpx.AsyncClient) -> None:
    ann, bob = await register(api, "ann"), await register(api, "bob")
    slug = (await publish(api, ann, "Liked"))["slug"]
    liked = await api.post(f"/api/articles/{slug}/favorite", headers=bob)
    assert liked.status_code == 200
    assert (liked.json()["article"]["favorited"], liked.json()["article"]["favoritesCount"]) == (
        True,
        1,
    )
    again = await api.post(f"/api/articles/{slug}/favorite", headers=bob)
    assert again.json()["article"]["favoritesCount"] == 1
    seen_by_ann = (await api.get(f"/api/articles/{slug}", headers=ann)).json()["article"]
    assert (seen_by_ann["favorited"], seen_by_ann["favoritesCount"]) == (False, 1)
    unliked = await api.delete(f"/api/articles/{slug}/favorite", headers=bob)
    assert unliked.json()["article"]["favoritesCount"] == 0
    assert (await api.post(f"/api/articles/{slug}/favorite")).status_code == 401


async def test_comments_can_be_added_listed_and_deleted_by_their_author(
    api: httpx.AsyncClient,
) -> None:
    ann, bob = await register(api, "ann"), await register(api, "bob")
    slug = (await publish(api, ann, "Discussed"))["slug"]
    added = await api.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": "Thank you!"}}, headers=bob
    )
    assert added.status_code == 200
    comment = added.json()["comment"]
    assert set(comment) == {"id", "createdAt", "updatedAt", "body", "author"}
    assert comment["author"]["username"] == "bob"
    await api.post("/api/profiles/bob/follow", headers=ann)
    listed = (await api.get(f"/api/articles/{slug}/comments", headers=ann)).json()
    assert [c["body"] for c in listed["comments"]] == ["Thank you!"]
    assert listed["comments"][0]["author"]["following"] is True
    path = f"/api/articles/{slug}/comments/{comment['id']}"
    assert (await api.delete(path, headers=ann)).status_code == 403
    assert (await api.delete(path, headers=bob)).status_code == 200
    assert (await api.delete(path, headers=bob)).status_code == 404
    empty = await api.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": ""}}, headers=bob
    )
    assert empty.json() == {"errors": {"body": ["body can't be empty"]}}


async def test_tags_lists_the_tags_in_use_most_used_first(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/tags")).json() == {"tags": []}
    auth = await register(api, "ann")
    await publish(api, auth, "One", ["python", "sql"])
    await publish(api, auth, "Two", ["sql"])
    assert (await api.get("/api/tags")).json() == {"tags": ["sql", "python"]}
