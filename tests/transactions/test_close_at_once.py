"""The end of a read-only transaction whose reads each ran on a pooled connection of their own
(the plain read before BEGIN, dalkit.query.plain_entities) closes its session without a
greenlet: nothing is left to send. The entities are detached as ``session.close()`` detaches
them, and a session listener that runs at that close still runs where it may await."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import greenlet  # type: ignore[import-untyped,unused-ignore]
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.util import await_only

from dalkit import AsyncDatabase, AsyncRepository

from .models import Item

pytestmark = pytest.mark.postgres


class Items(AsyncRepository[Item]):
    pass


@pytest.fixture
def switches() -> Iterator[list[str]]:
    """The greenlet switches and throws of this thread while the test runs."""
    seen: list[str] = []

    def trace(kind: str, _: Any) -> None:
        seen.append(kind)

    previous = greenlet.settrace(trace)
    try:
        yield seen
    finally:
        greenlet.settrace(previous)


async def test_a_read_only_block_ends_without_a_greenlet_and_detaches_its_entities(
    apg: AsyncDatabase, switches: list[str]
) -> None:
    async with apg.transaction() as session:
        item = await Items(session).get(1)
        assert item is not None
        assert session.sync_session._transaction is None  # the read ran apart
        switches.clear()
    assert switches == []
    assert sa.inspect(item).detached
    assert item.name == "one"
    assert len(session.sync_session.identity_map) == 0


async def test_a_detach_listener_still_runs_where_it_may_await(apg: AsyncDatabase) -> None:
    awaited: list[int] = []

    async def later() -> int:
        await asyncio.sleep(0)
        return 1

    async with apg.transaction() as session:
        item = await Items(session).get(1)

        @event.listens_for(session.sync_session, "persistent_to_detached")
        def detached(_: Any, state: Any) -> None:
            awaited.append(await_only(later()))

    assert awaited == [1]
    assert sa.inspect(item).detached


async def test_a_block_that_wrote_still_commits_and_closes(apg: AsyncDatabase) -> None:
    async with apg.transaction() as session:
        item = await Items(session).get(1)
        assert item is not None
        item.name = "changed"
    async with apg.transaction() as session:
        again = await Items(session).get(1)
        assert again is not None
        assert again.name == "changed"
    pool: Any = apg.engine.sync_engine.pool
    assert pool.checkedout() == 0
