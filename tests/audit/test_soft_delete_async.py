"""Soft-deleted rows are hidden or refused the same way on every path: delete-orphan soft-deletes
(and the audit records it as an update), bulk_update and upsert refuse a soft-deleted row, and
``live_condition`` is the rule QueryBuilder applies.
This async file is the source of ``test_soft_delete.py``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncUnitOfWork, audit
from dalkit.query.soft_delete import SoftDeletedRowError, live_condition

from .models import Author, Gadget, Post, Scratch, Tag, table


async def test_removing_a_soft_deletable_child_of_a_delete_orphan_relationship_soft_deletes_it(
    async_database: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(async_database) as uow:
        author = Author(email="a@x", name="A", posts=[Post(title="one"), Post(title="two")])
        uow.session.add(author)
    async with AsyncUnitOfWork(async_database, actor="editor") as uow:
        loaded = await uow.session.get(Author, author.id)
        assert loaded is not None
        await uow.session.refresh(loaded, ["posts"])
        loaded.posts.remove(loaded.posts[0])
        await uow.session.flush()
        assert [p.title for p in loaded.posts] == ["two"]  # gone from the collection as asked
    async with async_database.session() as session:
        rows = (await session.execute(sa.select(Post).order_by(Post.id))).scalars().all()
        assert [(p.title, p.author_id, p.deleted_at is not None) for p in rows] == [
            ("one", author.id, True),
            ("two", author.id, False),
        ]
        entries = await audit.history_async(session, Post, rows[0].id)
    assert [e.action for e in entries] == ["create", "update"]
    assert list(entries[-1].changes) == ["deleted_at"]
    assert entries[-1].changes["deleted_at"]["old"] is None
    assert entries[-1].actor_id == "editor"


async def test_bulk_update_refuses_a_soft_deleted_row_and_changes_nothing(
    async_database: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add_all([Tag(id=1, label="a"), Tag(id=2, label="b")])
        uow.session.add_all([Gadget(id=1, sku="a", name="A"), Gadget(id=2, sku="b", name="B")])
    async with AsyncUnitOfWork(async_database) as uow:
        await uow.repository(Tag).delete(2)
        await uow.repository(Gadget).delete(2)
    for model, field in ((Tag, "label"), (Gadget, "name")):
        with pytest.raises(SoftDeletedRowError, match="bulk_update"):
            async with AsyncUnitOfWork(async_database) as uow:
                await uow.repository(model).bulk_update(
                    [{"id": 1, field: "changed"}, {"id": 2, field: "changed"}]
                )
        async with async_database.session() as session:
            values = (await session.execute(sa.select(getattr(model, field)))).scalars().all()
            assert "changed" not in values


async def test_upsert_refuses_to_update_or_return_a_soft_deleted_row(
    async_database: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add(Gadget(id=1, sku="a", name="A"))
    async with AsyncUnitOfWork(async_database) as uow:
        await uow.repository(Gadget).delete(1)
    updates: tuple[list[str] | None, ...] = (None, [])
    for update in updates:  # ON CONFLICT DO UPDATE, and DO NOTHING then read back
        with pytest.raises(SoftDeletedRowError, match="upsert"):
            async with AsyncUnitOfWork(async_database) as uow:
                await uow.repository(Gadget).upsert(
                    {"id": 1, "sku": "a", "name": "again"}, on=["sku"], update=update
                )
    async with AsyncUnitOfWork(async_database) as uow:
        fresh = await uow.repository(Gadget).upsert({"id": 2, "sku": "b", "name": "B"}, on=["sku"])
        assert fresh.name == "B"
    async with async_database.session() as session:
        assert (await session.get(Gadget, 1)).name == "A"  # type: ignore[union-attr]


def test_live_condition_is_deleted_at_is_null_for_soft_deletable_models_and_tables() -> None:
    for source in (Post, table(Post)):
        condition = live_condition(source)
        assert condition is not None
        assert str(condition) == "audit_posts.deleted_at IS NULL"
    assert live_condition(Scratch) is None
    assert live_condition(table(Scratch)) is None
