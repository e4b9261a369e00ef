"""Many requests with random outcomes (success, 4xx, failed commit, handler error, client gone):
afterwards no connection is left checked out and exactly the successful writes are stored."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase

from .apps import Probe, async_app
from .models import Note

REQUESTS = 2_000


@pytest.mark.slow
async def test_after_2000_requests_with_random_failures_no_connection_is_checked_out(
    async_db: AsyncDatabase, observer: AsyncDatabase, client: httpx.AsyncClient
) -> None:
    app = async_app(async_db, observer, Probe())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    rng = random.Random(15)
    gate = asyncio.Semaphore(32)
    expected: set[str] = set()

    async def one(http: httpx.AsyncClient, n: int) -> None:
        value = f"load-{n}"
        outcome = rng.choice(["ok", "ok", "ok", "4xx", "commit", "error", "cancel"])
        async with gate:
            if outcome == "ok":
                response = await http.post("/notes", params={"value": value})
                assert response.status_code == 200, response.text
                expected.add(value)
            elif outcome == "4xx":
                response = await http.post("/notes", params={"value": value, "status": "400"})
                assert response.status_code == 400
            elif outcome == "commit":
                response = await http.post("/orphans", params={"value": value})
                assert response.status_code == 500
            elif outcome == "error":
                response = await http.post("/boom", params={"value": value})
                assert response.status_code == 500
            else:
                request = asyncio.ensure_future(http.post("/notes", params={"value": value}))
                for _ in range(rng.randint(0, 8)):  # cancelled at some point of its way
                    await asyncio.sleep(0)
                request.cancel()
                try:
                    await request
                    expected.add(value)  # it finished before the cancellation arrived
                except asyncio.CancelledError:
                    pass

    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await asyncio.gather(*(one(http, n) for n in range(REQUESTS)))

    assert async_db.pool_stats()["checked_out"] == 0
    async with observer.transaction() as session:
        saved = set(await session.scalars(sa.select(Note.value).where(Note.value.like("load-%"))))
    assert saved == expected
