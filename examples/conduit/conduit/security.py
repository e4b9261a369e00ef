"""Passwords (argon2, hashed off the event loop) and the ``Authorization: Token <jwt>``
scheme: the dependencies that find the current user and make them the audit actor."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from conduit.models import User
from conduit.repositories import UserRepository
from conduit.settings import Settings
from dalkit.audit import actor
from dalkit.integrations.fastapi import repository

ALGORITHM = "HS256"


async def hash_password(hasher: PasswordHasher, password: str) -> str:
    return await run_in_threadpool(hasher.hash, password)


async def password_matches(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return await run_in_threadpool(hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(settings: Settings, user: User) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "sub": str(user.id),
        "username": user.username,
        "iat": now,
        "exp": now + dt.timedelta(seconds=settings.token_lifetime_s),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Token"})


def _user_id(request: Request, settings: Settings) -> int | None:
    """The user id the request's token names; None without a token; 401 for a bad one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme != "Token" or not token:
        raise _unauthorized("the Authorization header must read 'Token <jwt>'")
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
        return int(claims["sub"])
    except (jwt.InvalidTokenError, ValueError):
        raise _unauthorized("the token is invalid or has expired") from None


Users = Annotated[UserRepository, Depends(repository(UserRepository))]


async def optional_user(request: Request, users: Users) -> AsyncIterator[User | None]:
    """The signed-in user, or None for an anonymous request; their changes are audited as
    theirs for as long as the request runs."""
    user_id = _user_id(request, settings_of(request))
    if user_id is None:
        yield None
        return
    user = await users.get_or_none(user_id)
    if user is None:
        raise _unauthorized("the token's user no longer exists")
    with actor(user.id, request.headers.get("x-request-id")):
        yield user


async def required_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise _unauthorized("authentication required")
    return user


CurrentUser = Annotated[User, Depends(required_user)]
MaybeUser = Annotated[User | None, Depends(optional_user)]
AppSettings = Annotated[Settings, Depends(settings_of)]
