"""The RealWorld JSON shapes: request bodies (validated by pydantic, errors rendered by
:mod:`conduit.errors`) and the response bodies, built from models exactly as the spec spells
them (camelCase, ISO 8601 UTC times with milliseconds)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator

from conduit.models import (
    EMAIL_LENGTH,
    IMAGE_LENGTH,
    TAG_LENGTH,
    TITLE_LENGTH,
    USERNAME_LENGTH,
    Article,
    Comment,
    User,
)
from conduit.repositories import Decorations

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("is invalid")
    return value


NonEmpty = Annotated[str, Field(min_length=1)]
# the bounded columns' lengths: a longer value is the client's mistake (422), not a 500
Email = Annotated[str, Field(min_length=1, max_length=EMAIL_LENGTH), AfterValidator(_email)]
Username = Annotated[str, Field(min_length=1, max_length=USERNAME_LENGTH)]
Title = Annotated[str, Field(min_length=1, max_length=TITLE_LENGTH)]
Image = Annotated[str, Field(max_length=IMAGE_LENGTH)]
TagName = Annotated[str, Field(min_length=1, max_length=TAG_LENGTH)]


class NewUser(BaseModel):
    username: Username
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
    """Every field optional: an absent one stays as it is. Only ``image`` may be null (its
    column is nullable); a null for another is refused rather than taken for absent."""

    email: Email | None = None
    username: Username | None = None
    password: NonEmpty | None = None
    bio: str | None = None
    image: Image | None = None

    @field_validator("email", "username", "password", "bio", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # runs for given values only (defaults are not validated): an explicit null
        if value is None:
            raise ValueError("can't be null")
        return value


class UpdateUserRequest(BaseModel):
    user: UpdateUser


class NewArticle(BaseModel):
    title: Title
    description: NonEmpty
    body: NonEmpty
    tagList: list[TagName] = []


class NewArticleRequest(BaseModel):
    article: NewArticle


class UpdateArticle(BaseModel):
    title: Title | None = None
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
