"""A transaction that sends nothing at its end (`dalkit.transaction.deferred.nothing_to_commit`)
reads its session's commit listeners from SQLAlchemy's per-class registry, without building
the session a dispatcher of its own; what it finds there is what that dispatcher would find:
listeners of the session's class added since, listeners of the session itself, and
``checks_commit`` checks, which still run (and may refuse the commit)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.transaction.deferred import checks_commit

from .models import Item

pytestmark = pytest.mark.postgres


def test_an_empty_block_builds_its_session_no_dispatcher(pg: Database) -> None:
    with pg.transaction() as session:
        pass
    assert "dispatch" not in session.__dict__


async def test_an_empty_async_block_builds_its_session_no_dispatcher(apg: AsyncDatabase) -> None:
    async with apg.transaction() as session:
        pass
    assert "dispatch" not in session.sync_session.__dict__


def test_a_listener_of_the_session_class_added_later_is_seen(pg: Database) -> None:
    with pg.transaction():
        pass  # the class's sessions have been made: its registry entry exists
    seen: list[Session] = []
    cls = pg.session_factory.class_
    listener = seen.append  # one bound method, to remove the one added
    event.listen(cls, "after_commit", listener)
    try:
        with pg.transaction() as session:
            pass
    finally:
        event.remove(cls, "after_commit", listener)
    assert seen == [session]  # the full commit ran, as SQLAlchemy's would


def test_a_listener_of_the_session_itself_is_seen(pg: Database) -> None:
    seen: list[Session] = []
    with pg.transaction() as session:
        event.listen(session, "after_commit", seen.append)
    assert seen == [session]


def test_a_session_class_never_used_before_is_read_as_sqlalchemy_reads_it(pg: Database) -> None:
    seen: list[Session] = []
    fresh: Any = type("Fresh", (pg.session_factory.class_,), {})
    event.listen(fresh, "after_commit", seen.append)
    pg.session_factory.class_ = fresh
    with pg.transaction() as session:
        assert isinstance(session, fresh)
    assert seen == [session]


def test_a_commit_check_still_runs_and_may_refuse_the_commit(pg: Database) -> None:
    checked: list[Session] = []

    @checks_commit
    def refuse_dirty_names(session: Session) -> None:
        checked.append(session)
        if session.info.get("refuse"):
            raise LookupError("refused by the check")

    cls = pg.session_factory.class_
    event.listen(cls, "before_commit", refuse_dirty_names)
    try:
        with pg.transaction() as session:
            assert session.execute(sa.select(Item.name)).scalar_one() == "one"
        assert checked == [session]
        with pytest.raises(LookupError, match="refused"), pg.transaction() as refused:
            refused.info["refuse"] = True
    finally:
        event.remove(cls, "before_commit", refuse_dirty_names)
    assert checked == [session, refused]
    assert pg.transaction_stats()["failed"] == 1
