"""Many requests with random outcomes (success, 4xx, failed commit, handler error, client gone):
afterwards no connection is left checked out and exactly the successful writes are stored.

The requests go straight to the ASGI application, as a server would send them (an HTTP client
in between tests nothing more of the middleware), and the expected error logs are counted
rather than formatted: formatting their tracebacks took seconds."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase

from .apps import Probe, async_app
from .models import Note

REQUESTS = 2_000
CONCURRENCY = 32
Message = MutableMapping[str, Any]


async def call(app: Callable[..., Awaitable[None]], path: str, **params: str) -> int | None:
    """POST ``path`` to ``app``; the status it started its response with (None: none). An
    error the application raises after answering (a 500) is what a server would log."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode(params).encode(),
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 50_000),
    }
    status: int | None = None

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    try:
        await app(scope, receive, send)
    except Exception:
        if status is None:
            raise
    return status


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@pytest.fixture
def web_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """The middleware's error logs, counted and kept from pytest's handlers."""
    logger = logging.getLogger("dalkit.web")
    counter = Counter()
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)


# no_cover: 2,000 requests through paths tests/integrations' middleware tests each take once
# (success, 4xx, failed commit, handler error, cancellation); the tracer slowed them only
@pytest.mark.slow
@pytest.mark.no_cover
async def test_after_2000_requests_with_random_failures_no_connection_is_checked_out(
    async_db: AsyncDatabase, observer: AsyncDatabase, client: httpx.AsyncClient, web_errors: Counter
) -> None:
    app = async_app(async_db, observer, Probe())
    rng = random.Random(15)
    gate = asyncio.Semaphore(CONCURRENCY)
    expected: set[str] = set()
    failed_commits = 0

    async def one(n: int) -> None:
        value = f"load-{n}"
        outcome = rng.choice(["ok", "ok", "ok", "4xx", "commit", "error", "cancel"])
        async with gate:
            if outcome == "ok":
                assert await call(app, "/notes", value=value) == 200
                expected.add(value)
            elif outcome == "4xx":
                assert await call(app, "/notes", value=value, status="400") == 400
            elif outcome == "commit":
                nonlocal failed_commits
                assert await call(app, "/orphans", value=value) == 500
                failed_commits += 1
            elif outcome == "error":
                assert await call(app, "/boom", value=value) == 500
            else:
                request = asyncio.ensure_future(call(app, "/notes", value=value))
                for _ in range(rng.randint(0, 8)):  # cancelled at some point of its way
                    await asyncio.sleep(0)
                request.cancel()
                try:
                    await request
                    expected.add(value)  # it finished before the cancellation arrived
                except asyncio.CancelledError:
                    pass

    await asyncio.gather(*(one(n) for n in range(REQUESTS)))

    assert async_db.pool_stats()["checked_out"] == 0
    assert web_errors.count == failed_commits > 0  # each logged once, and nothing else
    async with observer.transaction() as session:
        saved = set(await session.scalars(sa.select(Note.value).where(Note.value.like("load-%"))))
    assert saved == expected
