"""What Conduit shows off beyond the spec: no N+1 (query counts stay flat as pages grow), the
audit trail names the JWT's user, ArticlePublished goes through the outbox with its article,
and every connection is back in the pool afterwards."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from dalkit import AsyncDatabase, metadata
from dalkit.audit import history_async
from dalkit.testing import assert_max_queries

from .conduit_app import Article, Comment
from .conftest import publish, register


async def test_listing_pages_cost_the_same_queries_however_many_articles(
    api: httpx.AsyncClient, conduit_db: AsyncDatabase
) -> None:
    authors = [await register(api, f"author{n}") for n in range(4)]
    reader = await register(api, "reader")
    for n in range(20):
        article = await publish(api, authors[n % 4], f"Article {n}", [f"t{n % 3}", "all"])
        if n % 2:
            await api.post(f"/api/articles/{article['slug']}/favorite", headers=reader)
    await api.post("/api/profiles/author1/follow", headers=reader)

    # token user, count, page, tags, favourite counts, favourited, following
    with assert_max_queries(conduit_db, 7):
        page = await api.get("/api/articles", params={"limit": "20"}, headers=reader)
    assert len(page.json()["articles"]) == 20
    with assert_max_queries(conduit_db, 7):
        feed = await api.get("/api/articles/feed", headers=reader)
    assert feed.json()["articlesCount"] == 5
    with assert_max_queries(conduit_db, 5):
        await api.get("/api/articles", params={"tag": "all"})


async def test_comment_lists_cost_the_same_queries_however_many_comments(
    api: httpx.AsyncClient, conduit_db: AsyncDatabase
) -> None:
    ann = await register(api, "ann")
    slug = (await publish(api, ann, "Busy"))["slug"]
    for n in range(10):
        who = await register(api, f"c{n}")
        body = {"comment": {"body": f"comment {n}"}}
        await api.post(f"/api/articles/{slug}/comments", json=body, headers=who)
    # token user, article with author and tags (2), comments with authors, following
    with assert_max_queries(conduit_db, 5):
        listed = await api.get(f"/api/articles/{slug}/comments", headers=ann)
    assert len(listed.json()["comments"]) == 10


async def test_article_and_comment_changes_are_audited_as_the_token_user(
    api: httpx.AsyncClient, conduit_db: AsyncDatabase
) -> None:
    ann, bob = await register(api, "ann"), await register(api, "bob")
    slug = (await publish(api, ann, "Audited"))["slug"]
    await api.put(f"/api/articles/{slug}", json={"article": {"body": "edited"}}, headers=ann)
    await api.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=bob)
    async with conduit_db.transaction() as session:
        article_id = await session.scalar(sa.select(Article.id))
        comment_id = await session.scalar(sa.select(Comment.id))
        article_trail = await history_async(session, Article, article_id)
        comment_trail = await history_async(session, Comment, comment_id)
        ids = {
            name: ident
            for name, ident in await session.execute(sa.text("SELECT username, id FROM users"))
        }
    assert [(e.action, e.actor_id) for e in article_trail] == [
        ("create", str(ids["ann"])),
        ("update", str(ids["ann"])),
    ]
    assert article_trail[1].changes["body"] == {"old": "all of Audited", "new": "edited"}
    assert [(e.action, e.actor_id) for e in comment_trail] == [("create", str(ids["bob"]))]


async def test_article_published_goes_through_the_outbox_with_its_article(
    api: httpx.AsyncClient, conduit_db: AsyncDatabase
) -> None:
    ann = await register(api, "ann")
    article = await publish(api, ann, "News", ["hot"])
    outbox = metadata.tables["dalkit_outbox"]
    async with conduit_db.transaction() as session:
        rows = (await session.execute(sa.select(outbox))).mappings().all()
    assert len(rows) == 1
    assert rows[0]["event_type"] == "conduit.article_published"
    assert rows[0]["payload"]["slug"] == article["slug"]
    assert rows[0]["payload"]["tags"] == ["hot"]
    assert conduit_db.pool_stats()["checked_out"] == 0
