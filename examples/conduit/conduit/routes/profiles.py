"""Profiles and follows (``/api/profiles/{username}``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from conduit.schemas import profile
from conduit.security import CurrentUser, MaybeUser, Users

router = APIRouter(prefix="/api/profiles", tags=["profiles"])


@router.get("/{username}")
async def get_profile(username: str, viewer: MaybeUser, users: Users) -> dict[str, Any]:
    user = await users.by_username(username)
    following = await users.following(viewer, {user.id})
    return {"profile": profile(user, user.id in following)}


@router.post("/{username}/follow")
async def follow(username: str, viewer: CurrentUser, users: Users) -> dict[str, Any]:
    user = await users.by_username(username)
    if user.id == viewer.id:
        raise HTTPException(422, "you cannot follow yourself")
    await users.follow(viewer, user)
    return {"profile": profile(user, True)}


@router.delete("/{username}/follow")
async def unfollow(username: str, viewer: CurrentUser, users: Users) -> dict[str, Any]:
    user = await users.by_username(username)
    await users.unfollow(viewer, user)
    return {"profile": profile(user, False)}
