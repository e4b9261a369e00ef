"""The tags in use (``/api/tags``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from conduit.repositories import TagRepository
from dalkit.integrations.fastapi import repository

router = APIRouter(prefix="/api", tags=["tags"])


@router.get("/tags")
async def tags(
    tags: Annotated[TagRepository, Depends(repository(TagRepository))],
) -> dict[str, Any]:
    return {"tags": await tags.in_use()}
