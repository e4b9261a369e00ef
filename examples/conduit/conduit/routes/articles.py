"""Articles, the feed and favourites (``/api/articles``), plus the keyset extension
(``/api/articles/keyset``). A new article publishes ``ArticlePublished`` through the outbox in
the request's transaction: no event for an article that was not saved, and no article without
its event."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from conduit import schemas
from conduit.caching import cached_repository
from conduit.events import ArticlePublished
from conduit.models import Article, User
from conduit.repositories import (
    ARTICLE_FILTERS,
    ArticleFilters,
    ArticleRepository,
    Decorations,
    TagRepository,
)
from conduit.security import CurrentUser, MaybeUser
from dalkit import AsyncUnitOfWork
from dalkit.integrations.fastapi import filters, unit_of_work
from dalkit.query.pagination import MAX_OFFSET

router = APIRouter(prefix="/api/articles", tags=["articles"])

Articles = Annotated[ArticleRepository, Depends(cached_repository(ArticleRepository))]
Tags = Annotated[TagRepository, Depends(cached_repository(TagRepository))]
# ends before the response starts, so its outbox rows commit with the request
Unit = Annotated[AsyncUnitOfWork, Depends(unit_of_work(outbox=True), scope="function")]
Limit = Annotated[int, Query(ge=1, le=100)]
# dalkit's pagination bound (no listing is that deep): past a bigint, the database's OFFSET
# failed, a 500 where the client's mistake deserves a 422
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
# unknown query parameters are refused (400, naming these) rather than silently ignored
ListingQuery = Annotated[
    dict[str, Any],
    Depends(filters((*ARTICLE_FILTERS, "limit", "offset"), ignore=(), exact=True)),
]
KeysetQuery = Annotated[
    dict[str, Any],
    Depends(filters((*ARTICLE_FILTERS, "limit", "after"), ignore=(), exact=True)),
]


def _slug(title: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:200] or "article"
    return f"{base}-{secrets.token_hex(3)}"


def _filters(query: dict[str, Any]) -> ArticleFilters:
    return ArticleFilters(**{k: v for k, v in query.items() if k in ARTICLE_FILTERS})


async def _many(
    articles: ArticleRepository, items: list[Article], viewer: User | None
) -> list[Any]:
    seen = await articles.decorations(items, viewer)
    return [schemas.article(item, seen) for item in items]


async def _one(articles: ArticleRepository, item: Article, viewer: User | None) -> dict[str, Any]:
    return {"article": (await _many(articles, [item], viewer))[0]}


async def _own(
    articles: ArticleRepository, slug: str, user: User, load: tuple[str, ...] = ("author", "tags")
) -> Article:
    item = await articles.by_slug(slug, load=load)
    if item.author_id != user.id:
        raise HTTPException(403, "only the author may change this article")
    return item


@router.get("")
async def list_articles(
    query: ListingQuery,
    viewer: MaybeUser,
    articles: Articles,
    limit: Limit = 20,
    offset: Offset = 0,
) -> dict[str, Any]:
    items, total = await articles.listing(_filters(query), limit, offset)
    return {"articles": await _many(articles, items, viewer), "articlesCount": total}


@router.get("/feed")
async def feed(
    viewer: CurrentUser, articles: Articles, limit: Limit = 20, offset: Offset = 0
) -> dict[str, Any]:
    items, total = await articles.feed(viewer, limit, offset)
    return {"articles": await _many(articles, items, viewer), "articlesCount": total}


@router.get("/keyset")
async def keyset(
    query: KeysetQuery,
    viewer: MaybeUser,
    articles: Articles,
    limit: Limit = 20,
    after: str | None = None,
) -> dict[str, Any]:
    page = await articles.keyset(_filters(query), limit, after)
    return {
        "articles": await _many(articles, page.items, viewer),
        "articlesCount": len(page.items),
        "nextCursor": page.next_cursor,
    }


@router.get("/{slug}")
async def get_article(slug: str, viewer: MaybeUser, articles: Articles) -> dict[str, Any]:
    return await _one(articles, await articles.by_slug(slug), viewer)


@router.post("", status_code=201)
async def create_article(
    body: schemas.NewArticleRequest, author: CurrentUser, tags: Tags, unit: Unit
) -> dict[str, Any]:
    new = body.article
    item = Article(
        slug=_slug(new.title),
        title=new.title,
        description=new.description,
        body=new.body,
        author=author,
        tags=await tags.named(new.tagList),
    )
    await unit.repository(ArticleRepository).add(item)
    event = ArticlePublished(
        article_id=item.id,
        slug=item.slug,
        author=author.username,
        tags=tuple(t.name for t in item.tags),
    )
    unit.publish(event, aggregate=item)
    return {"article": schemas.article(item, Decorations({}, set(), set()))}


@router.put("/{slug}")
async def update_article(
    slug: str, body: schemas.UpdateArticleRequest, user: CurrentUser, articles: Articles
) -> dict[str, Any]:
    item = await _own(articles, slug, user)
    values: dict[str, Any] = body.article.model_dump(exclude_unset=True, exclude_none=True)
    if values:
        if "title" in values and values["title"] != item.title:
            values["slug"] = _slug(values["title"])
        values["updated_at"] = dt.datetime.now(dt.UTC)
        item = await articles.update(item, **values)
    return await _one(articles, item, user)


@router.delete("/{slug}")
async def delete_article(slug: str, user: CurrentUser, articles: Articles) -> Response:
    await articles.delete(await _own(articles, slug, user, load=()))
    return Response(status_code=200)


@router.post("/{slug}/favorite")
async def favorite(slug: str, user: CurrentUser, articles: Articles) -> dict[str, Any]:
    item = await articles.by_slug(slug)
    await articles.favorite(user, item)
    return await _one(articles, item, user)


@router.delete("/{slug}/favorite")
async def unfavorite(slug: str, user: CurrentUser, articles: Articles) -> dict[str, Any]:
    item = await articles.by_slug(slug)
    await articles.unfavorite(user, item)
    return await _one(articles, item, user)
