"""Comments on an article (``/api/articles/{slug}/comments``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response

from conduit import schemas
from conduit.caching import cached_repository
from conduit.models import Comment
from conduit.repositories import ArticleRepository, CommentRepository
from conduit.security import CurrentUser, MaybeUser, Users
from dalkit.integrations.fastapi import repository

router = APIRouter(prefix="/api/articles/{slug}/comments", tags=["comments"])

Articles = Annotated[ArticleRepository, Depends(cached_repository(ArticleRepository))]
Comments = Annotated[CommentRepository, Depends(repository(CommentRepository))]


@router.get("")
async def list_comments(
    slug: str, viewer: MaybeUser, articles: Articles, comments: Comments, users: Users
) -> dict[str, Any]:
    article = await articles.by_slug(slug, load=())
    items = await comments.of_article(article)
    following = await users.following(viewer, {c.author_id for c in items})
    return {"comments": [schemas.comment(c, following) for c in items]}


@router.post("")
async def add_comment(
    slug: str,
    body: schemas.NewCommentRequest,
    author: CurrentUser,
    articles: Articles,
    comments: Comments,
) -> dict[str, Any]:
    article = await articles.by_slug(slug, load=())
    item = Comment(body=body.comment.body, article_id=article.id, author=author)
    await comments.add(item)
    return {"comment": schemas.comment(item, set())}


@router.delete("/{comment_id}")
async def delete_comment(
    slug: str, comment_id: int, user: CurrentUser, articles: Articles, comments: Comments
) -> Response:
    article = await articles.by_slug(slug, load=())
    item = await comments.get_or_none(comment_id)
    if item is None or item.article_id != article.id:
        raise HTTPException(404, "comment not found")
    if item.author_id != user.id:
        raise HTTPException(403, "only the author may delete this comment")
    await comments.delete(item)
    return Response(status_code=200)
