"""Tenant scoping's guard: a statement naming a tenant-scoped table that reaches the database
around the session's scoping (raw SQL, ``text()`` even through a session, ``db.sql()``,
``exec_driver_sql()``, a Core statement on a connection) is refused before it is sent, inside a
tenant (UnscopedStatementError) and outside any (TenantRequiredError), leaving nothing written;
``every_tenant()`` lets it through; the scoped paths, DDL and statements naming no such table
are untouched. This async file is the source of ``test_guard.py``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncUnitOfWork
from dalkit.query.tenant import (
    TenantRequiredError,
    UnscopedStatementError,
    every_tenant,
    tenant,
)

from .models import Item, Note, Shop, table

Path = Callable[[AsyncDatabase], Awaitable[Any]]


async def _text_in_session(db: AsyncDatabase) -> Any:
    async with db.transaction() as session:
        return (await session.execute(sa.text("SELECT label FROM tenant_items"))).all()


async def _db_sql(db: AsyncDatabase) -> Any:
    return await db.sql("SELECT label FROM tenant_items WHERE id > :low", low=0)


async def _core_on_session_connection(db: AsyncDatabase) -> Any:
    async with db.transaction() as session:
        connection = await session.connection()
        return (await connection.execute(sa.select(table(Item).c.label))).all()


async def _core_on_engine(db: AsyncDatabase) -> Any:
    async with db.engine.connect() as connection:
        return (await connection.execute(sa.select(table(Item).c.label))).all()


async def _driver_sql(db: AsyncDatabase) -> Any:
    async with db.engine.connect() as connection:
        return (await connection.exec_driver_sql("SELECT label FROM tenant_items")).all()


async def _core_update(db: AsyncDatabase) -> Any:
    async with db.engine.begin() as connection:
        await connection.execute(sa.update(table(Item)).values(label="taken"))


async def _core_delete(db: AsyncDatabase) -> Any:
    async with db.transaction() as session:
        connection = await session.connection()
        await connection.execute(sa.delete(table(Item)))


async def _core_insert(db: AsyncDatabase) -> Any:
    async with db.engine.begin() as connection:
        statement = sa.insert(table(Item)).values(id=9, shop_id=2, label="x", tenant_id="b")
        await connection.execute(statement)


async def _text_update_in_session(db: AsyncDatabase) -> Any:
    async with db.transaction() as session:
        await session.execute(sa.text("UPDATE tenant_items SET label = 'taken'"))


async def _quoted_driver_delete(db: AsyncDatabase) -> Any:
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql('DELETE FROM "tenant_items" WHERE id = 3')


async def _typed_text_in_session(db: AsyncDatabase) -> Any:
    async with db.transaction() as session:
        typed = sa.text("SELECT id, label FROM tenant_items").columns(Item.id, Item.label)
        return (await session.execute(typed)).all()


async def _union_in_session(db: AsyncDatabase) -> Any:
    async with db.transaction() as session:
        labels = sa.select(table(Item).c.label)
        return (await session.execute(sa.union(labels, labels))).all()


async def _table_in_a_subquery_of_a_model(db: AsyncDatabase) -> Any:
    # the criteria reach the model, not its Table used directly: this would count every tenant's
    async with db.transaction() as session:
        total = sa.select(sa.func.count(table(Item).c.id)).scalar_subquery()
        return (await session.execute(sa.select(Item.id, total))).all()


async def _table_in_a_subquery_of_core(db: AsyncDatabase) -> Any:
    # the conditions cover the FROM list, not a subquery's
    async with db.transaction() as session:
        ids = table(Item).c.id
        return (await session.execute(sa.select(ids).where(ids.in_(sa.select(ids))))).all()


async def _subquery_of_an_unscoped_model(db: AsyncDatabase) -> Any:
    # Note reaches no tenant-scoped model: the session leaves its select alone, and the
    # subquery would read every tenant's item ids
    async with db.transaction() as session:
        statement = sa.select(Note).where(Note.id.in_(sa.select(table(Item).c.id)))
        return (await session.execute(statement)).scalars().all()


READS = {
    "text() in a session": _text_in_session,
    "db.sql()": _db_sql,
    "Core on a session's connection": _core_on_session_connection,
    "Core on an engine connection": _core_on_engine,
    "exec_driver_sql()": _driver_sql,
    "text().columns() in a session": _typed_text_in_session,
    "UNION in a session": _union_in_session,
    "subquery of an unscoped model": _subquery_of_an_unscoped_model,
    "Table in a subquery of a model's select": _table_in_a_subquery_of_a_model,
    "Table in a subquery of a Core select": _table_in_a_subquery_of_core,
}
WRITES = {
    "Core UPDATE on an engine connection": _core_update,
    "Core DELETE on a session's connection": _core_delete,
    "Core INSERT on an engine connection": _core_insert,
    "text() UPDATE in a session": _text_update_in_session,
    "quoted name in exec_driver_sql()": _quoted_driver_delete,
}


@pytest.fixture
async def seeded(async_database: AsyncDatabase) -> AsyncDatabase:
    """Tenant a: shop 1, items 1 and 2; tenant b: shop 2, item 3; a note of no tenant."""
    with every_tenant():
        async with async_database.transaction() as session:
            session.add_all([Shop(id=1, code="A", name="a", tenant_id="a")])
            session.add_all([Shop(id=2, code="B", name="b", tenant_id="b")])
            await session.flush()
            for ident, shop, owner in ((1, 1, "a"), (2, 1, "a"), (3, 2, "b")):
                session.add(Item(id=ident, shop_id=shop, label=f"item {ident}", tenant_id=owner))
            session.add(Note(id=1, text="shared"))
    return async_database


async def _items(db: AsyncDatabase) -> list[tuple[int, str, str]]:
    with every_tenant():
        async with db.session() as session:
            found = await session.execute(
                sa.select(Item.id, Item.label, Item.tenant_id).order_by(Item.id)
            )
            return [(i, label, owner) for i, label, owner in found.all()]


@pytest.mark.parametrize("path", [*READS.values(), *WRITES.values()], ids=[*READS, *WRITES])
async def test_a_path_around_the_session_is_refused_inside_a_tenant(
    seeded: AsyncDatabase, path: Path
) -> None:
    before = await _items(seeded)
    with tenant("a"), pytest.raises(UnscopedStatementError, match="'tenant_items' inside tenant"):
        await path(seeded)
    assert await _items(seeded) == before


@pytest.mark.parametrize("path", [*READS.values(), *WRITES.values()], ids=[*READS, *WRITES])
async def test_outside_any_tenant_the_same_paths_raise_tenant_required(
    seeded: AsyncDatabase, path: Path
) -> None:
    before = await _items(seeded)
    with pytest.raises(TenantRequiredError, match="every_tenant"):
        await path(seeded)
    assert await _items(seeded) == before


async def test_every_tenant_lets_the_paths_through(seeded: AsyncDatabase) -> None:
    with every_tenant():
        assert sorted(await _text_in_session(seeded)) == [("item 1",), ("item 2",), ("item 3",)]
        assert len(await _db_sql(seeded)) == 3
        assert len(await _core_on_engine(seeded)) == 3
        await _core_update(seeded)
    assert {label for _, label, _ in await _items(seeded)} == {"taken"}


async def test_the_scoped_paths_pass_and_see_the_tenant_rows_only(seeded: AsyncDatabase) -> None:
    with tenant("a"):
        async with AsyncUnitOfWork(seeded) as uow:
            session = uow.session
            items = uow.repository(Item)
            assert [i.id for i in await items.list()] == [1, 2]
            assert await items.count() == 2
            core = await session.execute(sa.select(table(Item).c.id).order_by("id"))
            assert core.scalars().all() == [1, 2]
            total = sa.select(sa.func.count(Item.id)).scalar_subquery()  # the model: scoped
            counted = await session.execute(sa.select(Item.id, total).order_by(Item.id))
            assert counted.all() == [(1, 2), (2, 2)]
            shop = await session.get(Shop, 1)
            assert shop is not None
            await session.refresh(shop, ["items"])  # a relationship load
            assert [i.id for i in shop.items] == [1, 2]
            session.expire(shop, ["name"])
            await session.refresh(shop, ["name"])  # an attribute load by identity
            await session.execute(sa.update(Item).values(label="renamed"))
            await session.execute(sa.insert(table(Item)).values(id=4, shop_id=1, label="new"))
            await session.execute(sa.delete(table(Item)).where(table(Item).c.id == 2))
            await items.bulk_insert([{"id": 5, "shop_id": 1, "label": "bulk"}])
            await items.bulk_update([{"id": 5, "label": "bulk!"}])
            await uow.repository(Shop).upsert({"id": 6, "code": "A6", "name": "a6"}, on=["code"])
            session.add(Item(id=7, shop_id=1, label="flushed"))
            await session.flush()
            seven = await session.get(Item, 7)
            assert seven is not None
            seven.label = "changed"
            await session.flush()
            await session.delete(seven)
    assert await _items(seeded) == [
        (1, "renamed", "a"),
        (3, "item 3", "b"),
        (4, "new", "a"),
        (5, "bulk!", "a"),
    ]


async def test_statements_naming_no_scoped_table_and_ddl_pass(seeded: AsyncDatabase) -> None:
    with tenant("a"):
        assert await seeded.sql("SELECT text FROM tenant_notes") == [{"text": "shared"}]
        # the name inside a string literal or a comment names no table
        found = await seeded.sql("SELECT 'tenant_items' AS word -- FROM tenant_items")
        assert found == [{"word": "tenant_items"}]
        async with seeded.engine.begin() as connection:
            await connection.exec_driver_sql("CREATE INDEX ix_guard_label ON tenant_items (label)")
            await connection.exec_driver_sql("DROP INDEX ix_guard_label")
        with pytest.raises(UnscopedStatementError):  # DDL that copies every tenant's rows
            async with seeded.engine.begin() as connection:
                await connection.exec_driver_sql(
                    "CREATE TABLE guard_copy AS SELECT * FROM tenant_items"
                )
