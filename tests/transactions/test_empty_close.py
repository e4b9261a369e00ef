"""A transaction whose session holds nothing (no transaction, no entity) ends without
``session.close()``, which would only swap empty containers for new ones; a session holding an
entity, closed as "closed" rather than "reset" (``close_resets_only=False``), or of a class
with its own close, is still closed as SQLAlchemy closes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, AsyncRepository, Database, Repository, TransactionError
from dalkit.transaction import ended

from .models import Item

pytestmark = pytest.mark.postgres


class Items(Repository[Item]):
    pass


class AsyncItems(AsyncRepository[Item]):
    pass


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Session]]:
    """The sessions whose ``Session.close`` ran (the method itself, which still runs)."""
    closed: list[Session] = []
    close = Session.close

    def recorded(self: Session) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(Session, "close", recorded)
    ended._PLAIN_CLOSE.clear()  # judged again with the recording method in place
    yield closed
    ended._PLAIN_CLOSE.clear()


def test_an_empty_block_ends_without_a_close_and_refuses_later_use(
    pg: Database, closes: list[Session]
) -> None:
    with pg.transaction() as session:
        pass
    assert closes == []
    assert len(session.identity_map) == 0
    assert session._transaction is None
    with pytest.raises(TransactionError, match="has ended"):
        session.execute(sa.text("SELECT 1"))
    assert pg.transaction_stats()["committed"] == 2  # the fixture's and this one


async def test_an_empty_async_block_ends_without_a_close_and_refuses_later_use(
    apg: AsyncDatabase, closes: list[Session]
) -> None:
    async with apg.transaction() as session:
        pass
    assert closes == []
    with pytest.raises(TransactionError, match="has ended"):
        await session.execute(sa.text("SELECT 1"))


def test_a_block_holding_an_entity_is_closed_and_detaches_it(
    pg: Database, closes: list[Session]
) -> None:
    with pg.transaction() as session:
        item = Items(session).get(1)
        assert item is not None
    assert closes == [session]
    assert sa.inspect(item).detached
    assert len(session.identity_map) == 0


async def test_an_async_block_holding_an_entity_is_closed_and_detaches_it(
    apg: AsyncDatabase, closes: list[Session]
) -> None:
    async with apg.transaction() as session:
        item = await AsyncItems(session).get(1)
        assert item is not None
    assert closes == [session.sync_session]
    assert sa.inspect(item).detached


def test_a_session_whose_close_is_not_a_reset_is_closed(
    pg: Database, closes: list[Session]
) -> None:
    pg.session_factory.configure(close_resets_only=False)
    with pg.transaction() as session:
        pass
    assert closes == [session]
    assert session._close_state.name == "CLOSED"  # as SQLAlchemy's close leaves it


def test_a_session_class_with_its_own_close_is_closed(pg: Database, closes: list[Session]) -> None:
    own: list[Any] = []

    class OwnClose(pg.session_factory.class_):  # type: ignore[name-defined,misc]
        def close(self) -> None:
            own.append(self)
            super().close()

    pg.session_factory.class_ = OwnClose
    with pg.transaction() as session:
        pass
    assert own == [session]
    assert closes == [session]


def test_a_block_that_raised_with_a_pending_entity_expunges_it(pg: Database) -> None:
    item = Item(id=5, name="five")
    with pytest.raises(LookupError):
        with pg.transaction() as session:
            session.add(item)  # pending, never flushed
            raise LookupError("given up")
    assert sa.inspect(item).transient
    assert len(session.identity_map) == 0
    assert not session.new
