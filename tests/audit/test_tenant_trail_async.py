"""The audit trail inside a tenant: the log holds every tenant's entries, and inside
``dalkit.tenant(t)`` ``history`` and ``changes_by`` return those of tenant-scoped models only
for entities of ``t`` (deleted ones included, by the tenant their entries recorded); entries of
other models pass; ``every_tenant()`` sees all; outside any tenant the trail of a tenant-scoped
model raises. This async file is the source of ``test_tenant_trail.py``."""

from __future__ import annotations

import pytest

from dalkit import AsyncDatabase, AsyncUnitOfWork
from dalkit.audit import actor, changes_by_async, history_async
from dalkit.query.tenant import TenantRequiredError, every_tenant, tenant

from .tenant_models import Base, Document, Memo


@pytest.fixture
async def documents(async_db: AsyncDatabase) -> AsyncDatabase:
    """Tenant a wrote document 1, tenant b documents 2 (then renamed) and 3 (then deleted),
    each with a memo of the same id; one actor per tenant."""
    await async_db.create_all(Base.metadata)
    for owner, ident in (("a", 1), ("b", 2), ("b", 3)):
        with tenant(owner), actor(f"user-{owner}"):
            async with AsyncUnitOfWork(async_db) as uow:
                uow.session.add_all([Document(id=ident, title=f"doc {ident}"), Memo(id=ident)])
    with tenant("b"), actor("user-b"):
        async with AsyncUnitOfWork(async_db) as uow:
            renamed = await uow.session.get(Document, 2)
            assert renamed is not None
            renamed.title = "renamed"
            await uow.session.delete(await uow.session.get(Document, 3))
    return async_db


async def _actions(db: AsyncDatabase, model: type[Document] | type[Memo], ident: int) -> list[str]:
    async with db.session() as session:
        return [entry.action for entry in await history_async(session, model, ident)]


async def test_history_shows_the_entities_of_the_tenant_only(documents: AsyncDatabase) -> None:
    with tenant("a"):
        assert await _actions(documents, Document, 1) == ["create"]
        assert await _actions(documents, Document, 2) == []  # tenant b's
        assert await _actions(documents, Document, 3) == []
        assert await _actions(documents, Memo, 2) == ["create"]  # of no tenant: shown
    with tenant("b"):
        assert await _actions(documents, Document, 2) == ["create", "update"]
        assert await _actions(documents, Document, 3) == ["create", "delete"]  # deleted
        assert await _actions(documents, Document, 1) == []
    with every_tenant():
        assert await _actions(documents, Document, 2) == ["create", "update"]


async def test_changes_by_leaves_out_other_tenants_entities(documents: AsyncDatabase) -> None:
    with tenant("a"):
        async with documents.session() as session:
            seen = [(e.entity_type, e.entity_id) for e in await changes_by_async(session, "user-b")]
    assert seen == [("Memo", "2"), ("Memo", "3")]
    with tenant("b"):
        async with documents.session() as session:
            mine = await changes_by_async(session, "user-b")
    assert [(e.entity_type, e.action) for e in mine if e.entity_type == "Document"] == [
        ("Document", "create"),
        ("Document", "create"),
        ("Document", "update"),
        ("Document", "delete"),
    ]


async def test_outside_any_tenant_a_scoped_trail_raises(documents: AsyncDatabase) -> None:
    with pytest.raises(TenantRequiredError):
        await _actions(documents, Document, 1)
    assert await _actions(documents, Memo, 1) == ["create"]


async def test_a_key_another_tenant_reused_shows_each_tenant_its_own_entries(
    documents: AsyncDatabase,
) -> None:
    with tenant("a"), actor("user-a"):  # b deleted document 3; a takes its key
        async with AsyncUnitOfWork(documents) as uow:
            uow.session.add(Document(id=3, title="a's own"))
        async with AsyncUnitOfWork(documents) as uow:
            reused = await uow.session.get(Document, 3)
            assert reused is not None
            reused.title = "a's renamed"
    with tenant("a"):
        async with documents.session() as session:
            mine = await history_async(session, Document, 3)
    assert [(e.action, e.actor_id) for e in mine] == [("create", "user-a"), ("update", "user-a")]
    with tenant("b"):
        async with documents.session() as session:
            theirs = await history_async(session, Document, 3)
    assert [(e.action, e.actor_id) for e in theirs] == [("create", "user-b"), ("delete", "user-b")]


async def test_an_editor_s_change_of_a_key_since_reused_stays_with_its_tenant(
    documents: AsyncDatabase,
) -> None:
    with tenant("b"), actor("editor"):  # b's document 2, edited, then deleted; a takes key 2
        async with AsyncUnitOfWork(documents) as uow:
            edited = await uow.session.get(Document, 2)
            assert edited is not None
            edited.title = "b's secret plan"
        async with AsyncUnitOfWork(documents) as uow:
            await uow.session.delete(await uow.session.get(Document, 2))
    with tenant("a"):
        async with AsyncUnitOfWork(documents) as uow:
            uow.session.add(Document(id=2, title="a's"))
        async with documents.session() as session:
            assert await changes_by_async(session, "editor") == []
    with tenant("b"):
        async with documents.session() as session:
            seen = await changes_by_async(session, "editor")
    assert [(e.entity_id, e.action) for e in seen] == [("2", "update"), ("2", "delete")]
