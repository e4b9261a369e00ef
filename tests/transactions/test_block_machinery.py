"""The with-block of ``db.transaction()`` is a class of its own, not a contextlib generator
(whose machinery was 1.7 us of CPU per block): these tests see which code runs, and that the
block still ends as the generator did, the body's error raised as it came, a commit's error
raised in its place, and the unit of work's rollback thrown in answered "not suppressed"."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import dalkit as dalkit_package
from dalkit import AsyncDatabase, Database, UniqueViolationError
from dalkit.transaction.ended import RollbackRequested
from dalkit.transaction.options import DEFAULT_OPTIONS

from .models import Item

pytestmark = pytest.mark.postgres


@pytest.fixture
def contextlib_calls() -> Iterator[list[str]]:
    """The functions of contextlib that dalkit's own code calls while the test runs."""
    seen: list[str] = []
    source = contextlib.__file__
    dalkit = os.path.dirname(dalkit_package.__file__)

    def profile(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code.co_filename == source:
            caller = frame.f_back.f_code.co_filename if frame.f_back else ""
            if caller.startswith(dalkit):
                seen.append(f"{frame.f_code.co_name} from {caller}")

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


class Boom(Exception):
    pass


def test_a_block_and_one_joining_it_run_no_generator_machinery(
    pg: Database, contextlib_calls: list[str]
) -> None:
    with pg.transaction() as session:
        with pg.transaction() as joined:
            assert joined is session
    assert contextlib_calls == []


async def test_an_async_block_and_one_joining_it_run_no_generator_machinery(
    apg: AsyncDatabase, contextlib_calls: list[str]
) -> None:
    async with apg.transaction() as session:
        async with apg.transaction() as joined:
            assert joined is session
    assert contextlib_calls == []


def _raise_boom() -> None:
    raise Boom("from the body")


def test_the_body_error_is_raised_as_it_came(pg: Database) -> None:
    with pytest.raises(Boom) as raised:
        with pg.transaction() as session:
            session.add(Item(id=2, name="two"))
            _raise_boom()
    # the same traceback, ending where the body raised, not in the block's own code
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "_raise_boom"
    with pg.transaction() as session:
        assert session.get(Item, 2) is None
    assert pg.transaction_stats()["failed"] == 1


async def test_the_async_body_error_is_raised_as_it_came(apg: AsyncDatabase) -> None:
    with pytest.raises(Boom) as raised:
        async with apg.transaction() as session:
            session.add(Item(id=2, name="two"))
            _raise_boom()
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "_raise_boom"
    async with apg.transaction() as session:
        assert await session.get(Item, 2) is None
    assert apg.transaction_stats()["failed"] == 1


def test_an_error_ending_the_block_is_raised_in_its_place(pg: Database) -> None:
    with pytest.raises(UniqueViolationError):  # the flush at the end of the block fails
        with pg.transaction() as session:
            session.add(Item(id=1, name="again"))
    stats = pg.transaction_stats()
    assert (stats["failed"], stats["rolled_back"]) == (1, 1)


def test_a_rollback_thrown_in_is_answered_not_suppressed(pg: Database) -> None:
    block = pg._transactions.transaction(DEFAULT_OPTIONS)
    session = block.__enter__()
    session.add(Item(id=3, name="three"))
    block.__exit__(RollbackRequested, RollbackRequested(), None)  # raises nothing
    with pg.transaction() as session:
        assert session.get(Item, 3) is None
    assert pg.transaction_stats()["discarded"] == 1


async def test_an_async_rollback_thrown_in_is_answered_not_suppressed(apg: AsyncDatabase) -> None:
    block = apg._transactions.transaction(DEFAULT_OPTIONS)
    session = await block.__aenter__()
    session.add(Item(id=3, name="three"))
    await block.__aexit__(RollbackRequested, RollbackRequested(), None)  # raises nothing
    async with apg.transaction() as session:
        assert await session.get(Item, 3) is None
    assert apg.transaction_stats()["discarded"] == 1
