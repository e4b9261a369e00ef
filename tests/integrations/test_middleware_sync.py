"""DatabaseMiddleware on a sync Database with sync endpoints, which Starlette runs in its
thread pool: the request's transaction follows the endpoint into the thread."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from dalkit import Database

from .models import Note


def stored(db: Database, value: str) -> int:
    with db.transaction() as session:
        return int(session.scalar(sa.select(sa.func.count()).where(Note.value == value)) or 0)


async def test_a_sync_endpoint_is_committed_before_the_response(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/notes", params={"value": "sync-kept"})
    assert response.status_code == 200
    assert stored(sync_db, "sync-kept") == 1
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_a_sync_endpoint_answering_4xx_is_rolled_back(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/notes", params={"value": "sync-no", "status": "409"})
    assert response.status_code == 409
    assert stored(sync_db, "sync-no") == 0


async def test_a_sync_commit_that_fails_gives_a_500(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/orphans", params={"value": "sync-orphan"})
    assert response.status_code == 500
    assert response.json()["status"] == 500
    assert stored(sync_db, "sync-orphan") == 0
    assert sync_db.pool_stats()["checked_out"] == 0


async def test_a_sync_stream_commits_first_and_refuses_later_writes(
    sync_client: httpx.AsyncClient, sync_db: Database
) -> None:
    response = await sync_client.post("/stream", params={"value": "sync-stream"})
    assert response.text == "first refused"
    assert stored(sync_db, "sync-stream") == 1
    assert stored(sync_db, "late") == 0
