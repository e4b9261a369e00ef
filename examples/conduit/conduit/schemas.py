"""The RealWorld JSON shapes: request bodies (validated by pydantic, errors rendered by
:mod:`conduit.errors`) and the response bodies, built from models exactly as the spec spells
them (camelCase, ISO 8601 UTC times with milliseconds)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from conduit.models import Article, Comment, User
from conduit.repositories import Decorations

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("is invalid")
    return value


NonEmpty = Annotated[str, Field(min_length=1)]
Email = Annotated[str, Field(min_length=1), AfterValidator(_email)]


class NewUser(BaseModel):
    username: NonEmpty
    email: Email
    password: NonEmpty


class NewUserRequest(BaseModel):
    user: NewUser


class LoginUser(BaseModel):
    email: NonEmpty
    password: NonEmpty


class LoginUserRequest(BaseModel):
    user: LoginUser


class UpdateUser(BaseModel):
    email: Email | None = None
    username: NonEmpty | None = None
    password: NonEmpty | None = None
    bio: str | None = None
    image: str | None = None


class UpdateUserRequest(BaseModel):
    user: UpdateUser


class NewArticle(BaseModel):
    title: NonEmpty
    description: NonEmpty
    body: NonEmpty
    tagList: list[Annotated[str, Field(min_length=1, max_length=64)]] = []


class NewArticleRequest(BaseModel):
    article: NewArticle


class UpdateArticle(BaseModel):
    title: NonEmpty | None = None
    description: NonEmpty | None = None
    body: NonEmpty | None = None


class UpdateArticleRequest(BaseModel):
    article: UpdateArticle


class NewComment(BaseModel):
    body: NonEmpty


class NewCommentRequest(BaseModel):
    comment: NewComment


def timestamp(value: dt.datetime) -> str:
    """``2016-02-18T03:22:56.637Z``; SQLite hands back naive UTC times."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def user_body(user: User, token: str) -> dict[str, Any]:
    return {
        "user": {
            "email": user.email,
            "token": token,
            "username": user.username,
            "bio": user.bio,
            "image": user.image,
        }
    }


def profile(user: User, following: bool) -> dict[str, Any]:
    return {"username": user.username, "bio": user.bio, "image": user.image, "following": following}


def article(item: Article, seen: Decorations) -> dict[str, Any]:
    return {
        "slug": item.slug,
        "title": item.title,
        "description": item.description,
        "body": item.body,
        "tagList": [tag.name for tag in item.tags],
        "createdAt": timestamp(item.created_at),
        "updatedAt": timestamp(item.updated_at),
        "favorited": item.id in seen.favorited,
        "favoritesCount": seen.favorites.get(item.id, 0),
        "author": profile(item.author, item.author_id in seen.following),
    }


def comment(item: Comment, following: set[int]) -> dict[str, Any]:
    return {
        "id": item.id,
        "createdAt": timestamp(item.created_at),
        "updatedAt": timestamp(item.updated_at),
        "body": item.body,
        "author": profile(item.author, item.author_id in following),
    }
