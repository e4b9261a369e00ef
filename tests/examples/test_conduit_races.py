"""Conduit under concurrent requests: requests that would each succeed one after the other
(two articles introducing the same new tag, a double favourite, a double follow) all succeed
when they run at once, rather than all but one failing as duplicates (422). The requests
overlap for real: each one's statements interleave with the others' on its own connection."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from .conftest import publish, register

#: how often each race runs: one round lost the race every time before the fix, on PostgreSQL
ROUNDS = 3


def statuses(responses: list[httpx.Response]) -> Counter[tuple[int, str]]:
    """How many responses answered each status, with the body of the failures."""
    return Counter((r.status_code, "" if r.is_success else r.text) for r in responses)


async def test_concurrent_articles_introducing_the_same_new_tags_are_all_created(
    api: httpx.AsyncClient,
) -> None:
    auth = await register(api, "ann")
    for round_ in range(ROUNDS):
        new, other = f"new{round_}", f"other{round_}"
        # the same new tags in both orders: the inserts must not deadlock either
        tag_lists = [[new], [new, other], [other, new], [new, "old"]]
        await publish(api, auth, f"Seed {round_}", ["old"])
        responses = await asyncio.gather(
            *(
                api.post(
                    "/api/articles",
                    json={
                        "article": {
                            "title": f"A{n}",
                            "description": "d",
                            "body": "b",
                            "tagList": tags,
                        }
                    },
                    headers=auth,
                )
                for n, tags in enumerate(tag_lists)
            )
        )
        assert statuses(responses) == {(201, ""): len(tag_lists)}
        assert [r.json()["article"]["tagList"] for r in responses] == tag_lists
    tags = (await api.get("/api/tags")).json()["tags"]
    assert sorted(tags) == sorted(
        ["old", *(f"new{r}" for r in range(ROUNDS)), *(f"other{r}" for r in range(ROUNDS))]
    )


async def test_concurrent_favourites_of_one_article_all_succeed(api: httpx.AsyncClient) -> None:
    ann, bob = await register(api, "ann"), await register(api, "bob")
    slug = (await publish(api, ann, "Popular"))["slug"]
    for _ in range(ROUNDS):
        await api.delete(f"/api/articles/{slug}/favorite", headers=bob)
        responses = await asyncio.gather(
            *(api.post(f"/api/articles/{slug}/favorite", headers=bob) for _ in range(3))
        )
        assert statuses(responses) == {(200, ""): 3}
        assert all(r.json()["article"]["favorited"] for r in responses)
        article = (await api.get(f"/api/articles/{slug}", headers=bob)).json()["article"]
        assert (article["favorited"], article["favoritesCount"]) == (True, 1)


async def test_concurrent_follows_of_one_profile_all_succeed(api: httpx.AsyncClient) -> None:
    await register(api, "ann")
    bob = await register(api, "bob")
    for _ in range(ROUNDS):
        await api.delete("/api/profiles/ann/follow", headers=bob)
        responses = await asyncio.gather(
            *(api.post("/api/profiles/ann/follow", headers=bob) for _ in range(3))
        )
        assert statuses(responses) == {(200, ""): 3}
        assert all(r.json()["profile"]["following"] for r in responses)
        profile = (await api.get("/api/profiles/ann", headers=bob)).json()["profile"]
        assert profile["following"] is True
