"""The tags in use (``/api/tags``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from conduit.caching import cached_repository
from conduit.repositories import TagRepository

router = APIRouter(prefix="/api", tags=["tags"])


@router.get("/tags")
async def tags(
    tags: Annotated[TagRepository, Depends(cached_repository(TagRepository))],
) -> dict[str, Any]:
    return {"tags": await tags.in_use()}
