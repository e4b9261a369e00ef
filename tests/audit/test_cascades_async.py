"""Audited rows that a DELETE changes through foreign keys are recorded: ON DELETE CASCADE
(through a table that is not audited too, and down a tree), ON DELETE SET NULL, and the ORM
nulling a deleted parent's children; whether the parent goes in a flush or in a DELETE
statement through a session; so are those an ON UPDATE CASCADE changes, two tables down too.
A DELETE or UPDATE of such a parent on a connection is refused, and so is a write whose
ON UPDATE CASCADE changes an audited row's primary key.
This async file is the source of ``test_cascades.py``."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncRepository, AsyncUnitOfWork
from dalkit.audit import UnauditedWriteError, history_async, unaudited

from .cascade_models import (
    Book,
    Box,
    CascadeBase,
    Crate,
    Drawer,
    Item,
    Label,
    Member,
    Node,
    Note,
    Rack,
    Seat,
    Shelf,
    Slot,
    Tag,
    Team,
)


def table(model: type[CascadeBase]) -> sa.Table:
    found = model.__table__
    assert isinstance(found, sa.Table)
    return found


@pytest.fixture
async def shelf(async_db: AsyncDatabase) -> AsyncDatabase:
    """Shelf 1 with books 1-2, label 1, box 1 holding note 1; shelf 2 with book 3."""
    await async_db.create_all(CascadeBase.metadata)
    async with AsyncUnitOfWork(async_db, actor="setup") as uow:
        uow.session.add_all([Shelf(id=1), Shelf(id=2)])
    async with AsyncUnitOfWork(async_db, actor="setup") as uow:
        uow.session.add_all(
            [
                Book(id=1, shelf_id=1, title="a"),
                Book(id=2, shelf_id=1, title="b"),
                Book(id=3, shelf_id=2, title="c"),
                Label(id=1, shelf_id=1),
                Box(id=1, shelf_id=1),
            ]
        )
    async with AsyncUnitOfWork(async_db, actor="setup") as uow:
        uow.session.add(Note(id=1, box_id=1))
    return async_db


async def trail(db: AsyncDatabase, model: type[Any], ident: int) -> list[tuple[str, Any]]:
    async with db.session() as session:
        return [(e.action, e.changes) for e in await history_async(session, model, ident)]


async def assert_shelf_one_recorded(db: AsyncDatabase, actor: str) -> None:
    for book, title in ((1, "a"), (2, "b")):
        assert (await trail(db, Book, book))[-1] == (
            "delete",
            {"id": book, "shelf_id": 1, "title": title},
        )
    assert [action for action, _ in await trail(db, Book, 3)] == ["create"]  # untouched
    assert (await trail(db, Label, 1))[-1] == ("update", {"shelf_id": {"old": 1, "new": None}})
    assert (await trail(db, Note, 1))[-1] == ("delete", {"id": 1, "box_id": 1})
    async with db.session() as session:
        entries = await history_async(session, Book, 1)
        assert entries[-1].actor_id == actor


async def test_a_flush_deleting_a_parent_records_what_its_foreign_keys_do(
    shelf: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(shelf, actor="remover") as uow:
        await uow.session.delete(await uow.session.get(Shelf, 1))
    await assert_shelf_one_recorded(shelf, "remover")


async def test_a_delete_statement_through_a_session_records_them_too(
    shelf: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(shelf, actor="sweeper") as uow:
        await uow.session.execute(sa.delete(Shelf).where(Shelf.id == 1))
    await assert_shelf_one_recorded(shelf, "sweeper")


async def test_a_delete_of_such_a_parent_on_a_connection_is_refused(shelf: AsyncDatabase) -> None:
    with pytest.raises(UnauditedWriteError, match="fk_shelves, whose rows audited rows reference"):
        async with shelf.engine.begin() as connection:
            await connection.execute(sa.delete(table(Shelf)).where(Shelf.id == 1))
    with pytest.raises(UnauditedWriteError, match="fk_shelves, whose rows audited rows reference"):
        await shelf.sql("DELETE FROM fk_shelves WHERE id = 1")
    async with shelf.engine.begin() as connection:  # other statements on it pass
        await connection.execute(sa.insert(table(Shelf)).values(id=3))
        # drawers: audited items reference them, with no ON DELETE action
        await connection.execute(sa.delete(table(Drawer)).where(Drawer.id == 99))
    assert [action for action, _ in await trail(shelf, Book, 1)] == ["create"]


async def test_a_tree_records_each_node_of_a_deleted_subtree(async_db: AsyncDatabase) -> None:
    await async_db.create_all(CascadeBase.metadata)
    for ident, parent in ((1, None), (2, 1), (3, 2), (4, 3), (5, None)):
        async with AsyncUnitOfWork(async_db) as uow:
            uow.session.add(Node(id=ident, parent_id=parent))
    async with AsyncUnitOfWork(async_db) as uow:
        await uow.session.delete(await uow.session.get(Node, 2))
    for ident in (2, 3, 4):
        assert [action for action, _ in await trail(async_db, Node, ident)] == [
            "create",
            "delete",
        ]
    for ident in (1, 5):
        assert [action for action, _ in await trail(async_db, Node, ident)] == ["create"]


async def test_a_delete_matching_a_node_and_its_child_records_each_node_once(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(CascadeBase.metadata)
    for ident, parent in ((1, None), (2, 1), (3, 2)):
        async with AsyncUnitOfWork(async_db) as uow:
            uow.session.add(Node(id=ident, parent_id=parent))
    async with AsyncUnitOfWork(async_db) as uow:
        await uow.session.execute(sa.delete(Node).where(Node.id.in_([1, 2])))
    for ident in (1, 2, 3):  # node 2, matched and cascaded to, was recorded twice
        assert [action for action, _ in await trail(async_db, Node, ident)] == [
            "create",
            "delete",
        ]


async def test_the_orm_nulling_a_deleted_parents_children_is_recorded(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(CascadeBase.metadata)
    async with AsyncUnitOfWork(async_db) as uow:
        uow.session.add(Drawer(id=1, items=[Item(id=1), Item(id=2)]))
    async with AsyncUnitOfWork(async_db) as uow:
        drawer = await uow.session.get(Drawer, 1)
        assert drawer is not None
        await uow.session.refresh(drawer, ["items"])  # loaded: the ORM nulls them itself
        await uow.session.delete(drawer)
    for ident in (1, 2):
        assert (await trail(async_db, Item, ident))[-1] == (
            "update",
            {"drawer_id": {"old": 1, "new": None}},
        )


@pytest.fixture
async def rack(async_db: AsyncDatabase) -> AsyncDatabase:
    await async_db.create_all(CascadeBase.metadata)
    async with AsyncUnitOfWork(async_db) as uow:
        uow.session.add(Rack(id=1, code="A"))
    async with AsyncUnitOfWork(async_db) as uow:
        uow.session.add_all([Slot(id=1, rack_code="A"), Slot(id=2, rack_code="A")])
    return async_db


async def assert_slots_moved(db: AsyncDatabase, old: str, new: str) -> None:
    for ident in (1, 2):
        assert (await trail(db, Slot, ident))[-1] == (
            "update",
            {"rack_code": {"old": old, "new": new}},
        )


async def test_a_flush_changing_a_referenced_key_records_the_on_update_cascade(
    rack: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(rack) as uow:
        found = await uow.session.get(Rack, 1)
        assert found is not None
        found.code = "B"
    await assert_slots_moved(rack, "A", "B")


async def test_an_update_statement_through_a_session_records_it_too(rack: AsyncDatabase) -> None:
    async with AsyncUnitOfWork(rack) as uow:
        await uow.session.execute(sa.update(Rack).where(Rack.id == 1).values(code="C"))
    await assert_slots_moved(rack, "A", "C")
    async with AsyncUnitOfWork(rack) as uow:  # the key unchanged: nothing to record
        await uow.session.execute(sa.update(Rack).where(Rack.id == 1).values(code="C"))
    assert len(await trail(rack, Slot, 1)) == 2


async def test_an_update_of_such_a_parent_on_a_connection_is_refused(rack: AsyncDatabase) -> None:
    with pytest.raises(UnauditedWriteError, match="fk_racks, whose rows audited rows reference"):
        async with rack.engine.begin() as connection:
            await connection.execute(sa.update(table(Rack)).values(code="D"))
    with pytest.raises(UnauditedWriteError, match="fk_racks"):
        await rack.sql("UPDATE fk_racks SET code = 'D'")
    assert len(await trail(rack, Slot, 1)) == 1


@pytest.fixture
async def team(async_db: AsyncDatabase) -> AsyncDatabase:
    """Rack 1 (code A), its team t, and member 1 of that team."""
    await async_db.create_all(CascadeBase.metadata)
    async with AsyncUnitOfWork(async_db, actor="setup") as uow:
        uow.session.add(Rack(id=1, code="A"))
        await uow.session.flush()
        uow.session.add(Team(id=1, rack_code="A", name="t"))
        await uow.session.flush()
        uow.session.add(Member(id=1, rack_code="A", team_name="t"))
    return async_db


async def test_an_on_update_cascade_two_tables_down_is_recorded(team: AsyncDatabase) -> None:
    async with AsyncUnitOfWork(team) as uow:
        await uow.session.execute(sa.update(Rack).where(Rack.id == 1).values(code="B"))
    assert (await trail(team, Member, 1))[-1] == ("update", {"rack_code": {"old": "A", "new": "B"}})
    async with AsyncUnitOfWork(team) as uow:
        found = await uow.session.get(Rack, 1)
        assert found is not None
        found.code = "C"
    assert (await trail(team, Member, 1))[-1] == ("update", {"rack_code": {"old": "B", "new": "C"}})
    with pytest.raises(UnauditedWriteError, match="fk_racks"):
        await team.sql("UPDATE fk_racks SET code = 'D'")
    assert len(await trail(team, Member, 1)) == 3


async def test_an_on_update_cascade_changing_an_audited_key_is_refused(team: AsyncDatabase) -> None:
    async with AsyncUnitOfWork(team, actor="setup") as uow:
        uow.session.add(Seat(rack_code="A", n=1))
    with pytest.raises(UnauditedWriteError, match="fk_seats"):
        async with AsyncUnitOfWork(team) as uow:
            await uow.session.execute(sa.update(Rack).where(Rack.id == 1).values(code="B"))
    with pytest.raises(UnauditedWriteError, match="fk_seats"):
        async with AsyncUnitOfWork(team) as uow:
            found = await uow.session.get(Rack, 1)
            assert found is not None
            found.code = "B"
    with unaudited():
        async with AsyncUnitOfWork(team) as uow:
            await uow.session.execute(sa.update(Rack).where(Rack.id == 1).values(code="B"))
    async with team.session() as session:
        assert (await session.execute(sa.select(Seat.rack_code, Seat.n))).all() == [("B", 1)]
        found_trail = await history_async(session, Seat, ("A", 1))
        # recorded as a delete before: the row had only moved to another key
        assert [entry.action for entry in found_trail] == ["create"]


class Crates(AsyncRepository[Crate]):
    pass


async def test_a_bulk_update_of_an_audited_parent_records_its_on_update_cascade(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(CascadeBase.metadata)
    async with AsyncUnitOfWork(async_db) as uow:
        uow.session.add(Crate(id=1, code="A"))
        await uow.session.flush()
        uow.session.add(Tag(id=1, crate_code="A"))
    async with AsyncUnitOfWork(async_db) as uow:
        assert await uow.repository(Crates).bulk_update([{"id": 1, "code": "B"}]) == 1
    assert (await trail(async_db, Crate, 1))[-1] == ("update", {"code": {"old": "A", "new": "B"}})
    # the tag followed the code with no entry
    assert (await trail(async_db, Tag, 1))[-1] == (
        "update",
        {"crate_code": {"old": "A", "new": "B"}},
    )
