"""Registration, login and the current user (``/api/users``, ``/api/user``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from conduit.models import User
from conduit.schemas import LoginUserRequest, NewUserRequest, UpdateUserRequest, user_body
from conduit.security import (
    AppSettings,
    CurrentUser,
    Users,
    hash_password,
    issue_token,
    password_matches,
)

router = APIRouter(prefix="/api", tags=["users"])


async def _check_free(users: Users, *, username: str | None, email: str | None) -> None:
    """Friendly messages for the common case; the unique constraints still decide races."""
    taken = []
    if username is not None and await users.exists(username=username):
        taken.append("username has already been taken")
    if email is not None and await users.exists(email=email):
        taken.append("email has already been taken")
    if taken:
        raise HTTPException(422, "; ".join(taken))


@router.post("/users", status_code=201)
async def register(body: NewUserRequest, users: Users, settings: AppSettings) -> dict[str, Any]:
    new = body.user
    await _check_free(users, username=new.username, email=new.email)
    user = User(
        username=new.username,
        email=new.email,
        password_hash=await hash_password(settings.hasher, new.password),
    )
    await users.add(user)
    return user_body(user, issue_token(settings, user))


@router.post("/users/login")
async def login(body: LoginUserRequest, users: Users, settings: AppSettings) -> dict[str, Any]:
    user = await users.first(email=body.user.email)
    if user is None or not await password_matches(
        settings.hasher, user.password_hash, body.user.password
    ):
        raise HTTPException(401, "email or password is invalid")
    return user_body(user, issue_token(settings, user))


@router.get("/user")
async def current(user: CurrentUser, settings: AppSettings) -> dict[str, Any]:
    return user_body(user, issue_token(settings, user))


@router.put("/user")
async def update(
    body: UpdateUserRequest, user: CurrentUser, users: Users, settings: AppSettings
) -> dict[str, Any]:
    changes = body.user
    await _check_free(
        users,
        username=changes.username if changes.username != user.username else None,
        email=changes.email if changes.email != user.email else None,
    )
    values = changes.model_dump(exclude_unset=True, exclude={"password"})
    if changes.password is not None:
        values["password_hash"] = await hash_password(settings.hasher, changes.password)
    if values:
        user = await users.update(user, **values)
    return user_body(user, issue_token(settings, user))
