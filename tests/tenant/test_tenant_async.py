"""Tenant scoping: inside ``dalkit.tenant(t)`` every read (ORM, Core, repository, QueryBuilder,
relationship loads) sees tenant ``t``'s rows, every write is stamped with ``t`` or refused when
it names or meets another tenant's row; outside any tenant, reads and writes raise.
This async file is the source of ``test_tenant.py``."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload

from dalkit import AsyncDatabase, AsyncRepository, AsyncUnitOfWork
from dalkit.query.builder import QueryBuilder
from dalkit.query.tenant import (
    TenantMismatchError,
    TenantRequiredError,
    UnscopedStatementError,
    every_tenant,
    stamp_rows,
    tenant,
)
from dalkit.testing import count_queries

from .models import Item, Note, Shop, table


class ItemRepository(AsyncRepository[Item]):
    pass


async def seed(db: AsyncDatabase) -> None:
    """Tenant a: shop 1 (items 1, 2); tenant b: shop 2 (item 3), and item 4 of b under shop 1."""
    for name, shops, items in (
        ("a", [Shop(id=1, code="A1", name="a-shop")], [(1, 1), (2, 1)]),
        ("b", [Shop(id=2, code="B1", name="b-shop")], [(3, 2), (4, 1)]),
    ):
        with tenant(name):
            async with AsyncUnitOfWork(db) as uow:
                uow.session.add_all(shops)
                await uow.session.flush()
                uow.session.add_all([Item(id=i, shop_id=s, label=f"item {i}") for i, s in items])


async def test_writes_are_stamped_and_reads_see_only_the_current_tenant(
    async_database: AsyncDatabase,
) -> None:
    await seed(async_database)
    with tenant("a"):
        async with AsyncUnitOfWork(async_database) as uow:
            shops = (await uow.session.execute(sa.select(Shop))).scalars().all()
            assert [(s.id, s.tenant_id) for s in shops] == [(1, "a")]
            assert await uow.session.get(Shop, 2) is None
            core = await uow.session.execute(sa.select(table(Item).c.id).order_by("id"))
            assert core.scalars().all() == [1, 2]
            count = sa.select(sa.func.count()).select_from(Item)
            assert (await uow.session.execute(count)).scalar_one() == 2
            repository = uow.repository(Item)
            assert [i.id for i in await repository.list()] == [1, 2]
            assert await repository.count() == 2
            built = QueryBuilder(Item).select("id", "label").order_by("id").build()
            assert [row.id for row in await uow.session.execute(built)] == [1, 2]
    with tenant("b"):  # the same cached statements, bound to the other tenant
        async with AsyncUnitOfWork(async_database) as uow:
            shops = (await uow.session.execute(sa.select(Shop))).scalars().all()
            assert [(s.id, s.tenant_id) for s in shops] == [(2, "b")]
            assert [i.id for i in await uow.repository(Item).list()] == [3, 4]
    with every_tenant():
        async with async_database.session() as session:
            assert (await session.execute(sa.select(sa.func.count(Item.id)))).scalar_one() == 4


async def test_relationship_loads_see_only_the_current_tenant(
    async_database: AsyncDatabase,
) -> None:
    await seed(async_database)
    with tenant("a"):
        async with async_database.session() as session:
            shop = await session.get(Shop, 1)
            assert shop is not None
            await session.refresh(shop, ["items"])
            assert [i.id for i in shop.items] == [1, 2]  # item 4 (tenant b) stays hidden
        async with async_database.session() as session:
            eager = sa.select(Shop).options(selectinload(Shop.items))
            (loaded,) = (await session.execute(eager)).scalars().all()
            assert [i.id for i in loaded.items] == [1, 2]
            joined = sa.select(Item.id).join(Item.shop).order_by(Item.id)
            assert (await session.execute(joined)).scalars().all() == [1, 2]


async def test_no_get_serves_another_tenants_entity_from_the_identity_map(
    async_database: AsyncDatabase,
) -> None:
    # SQLAlchemy's get() answers from the identity map without a statement, which the
    # statement scoping never sees: the sessions dalkit opens check what it finds
    await seed(async_database)
    async with async_database.session() as session:
        with every_tenant():
            theirs = await session.get(Item, 3)  # tenant b's, held in the identity map
            assert theirs is not None
        with tenant("a"):
            assert await ItemRepository(session).get_or_none(3) is None
            assert await session.get(Item, 3) is None
            with pytest.raises(sa.exc.NoResultFound):
                await session.get_one(Item, 3)
            mine = await session.get(Item, 1)
            assert mine is not None
            with count_queries(async_database) as counter:
                assert await session.get(Item, 1) is mine  # its own: still no statement
            assert counter.count == 0
        with tenant("b"):
            with count_queries(async_database) as counter:
                assert await session.get(Item, 3) is theirs
            assert counter.count == 0
            assert await ItemRepository(session).get_or_none(3) is theirs
            assert await session.get(Item, 1) is None
        with pytest.raises(TenantRequiredError):
            await session.get(Item, 3)  # outside any tenant, as a read of the table is
        with every_tenant():
            assert await session.get(Item, 1) is mine
        assert await session.get(Note, 1) is None  # a model not scoped needs no tenant


async def test_a_many_to_one_load_never_serves_another_tenants_entity_from_the_identity_map(
    async_database: AsyncDatabase,
) -> None:
    # item 4 is tenant b's, under tenant a's shop 1: SQLAlchemy's many-to-one load (lazy, or a
    # refresh of the attribute) looks in the identity map before it reads
    await seed(async_database)
    async with async_database.session() as session:
        with tenant("a"):
            shop = await session.get(Shop, 1)
            assert shop is not None
        with tenant("b"):
            item = await session.get(Item, 4)
            assert item is not None
            await session.refresh(item, ["shop"])
            assert item.shop is None  # as a session that never saw shop 1 reads it
        with tenant("a"):
            mine = await session.get(Item, 1)
            assert mine is not None
            with count_queries(async_database) as counter:
                await session.refresh(mine, ["shop"])
            assert mine.shop is shop
            assert counter.count == 1  # the item's row; the shop from the identity map


async def test_outside_any_tenant_reads_and_writes_of_scoped_models_raise(
    async_database: AsyncDatabase,
) -> None:
    await seed(async_database)
    async with async_database.session() as session:
        with pytest.raises(TenantRequiredError, match=r"dalkit\.tenant"):
            await session.execute(sa.select(Shop))
        with pytest.raises(TenantRequiredError):
            await session.execute(sa.select(table(Item)))
        with pytest.raises(TenantRequiredError):
            await session.execute(sa.update(Item).values(label="x"))
        session.add(Note(id=1, text="no tenant needed"))
        await session.flush()
    with pytest.raises(TenantRequiredError):
        async with AsyncUnitOfWork(async_database) as uow:
            uow.session.add(Shop(id=9, code="Z", name="z"))
    with pytest.raises(TenantRequiredError):
        tenant(None).__enter__()


async def test_statements_change_only_the_current_tenant_rows(
    async_database: AsyncDatabase,
) -> None:
    await seed(async_database)
    with tenant("a"):
        async with AsyncUnitOfWork(async_database) as uow:
            await uow.session.execute(sa.update(Item).values(label="renamed"))
            await uow.session.execute(sa.delete(table(Item)).where(table(Item).c.id > 1))
            await uow.session.execute(sa.insert(table(Item)).values(id=5, shop_id=1, label="new"))
    with every_tenant():
        async with async_database.session() as session:
            rows = await session.execute(
                sa.select(Item.id, Item.label, Item.tenant_id).order_by(Item.id)
            )
            assert rows.all() == [
                (1, "renamed", "a"),
                (3, "item 3", "b"),
                (4, "item 4", "b"),
                (5, "new", "a"),
            ]


async def test_writes_naming_or_meeting_another_tenant_are_refused(
    async_database: AsyncDatabase,
) -> None:
    await seed(async_database)
    with tenant("a"):
        with pytest.raises(TenantMismatchError):
            async with AsyncUnitOfWork(async_database) as uow:
                uow.session.add(Shop(id=7, code="X", name="x", tenant_id="b"))
        with pytest.raises(TenantMismatchError, match="another tenant"):
            async with AsyncUnitOfWork(async_database) as uow:
                await uow.repository(Shop).upsert(
                    {"id": 2, "code": "B1", "name": "stolen"}, on=["code"]
                )
        with pytest.raises(TenantMismatchError, match="another tenant"):
            async with AsyncUnitOfWork(async_database) as uow:
                await uow.repository(Item).bulk_update(
                    [{"id": 1, "label": "x"}, {"id": 3, "label": "x"}]
                )
        async with AsyncUnitOfWork(async_database) as uow:
            mine = await uow.repository(Shop).upsert(
                {"id": 8, "code": "A8", "name": "a8"}, on=["code"]
            )
            assert mine.tenant_id == "a"
            assert (
                await uow.repository(Shop).upsert_many(
                    [{"id": 9, "code": "A9", "name": "a9"}, {"id": 1, "code": "A1", "name": "a1!"}],
                    on=["code"],
                )
                == 2
            )
    with every_tenant():
        async with async_database.session() as session:
            shops = await session.execute(
                sa.select(Shop.id, Shop.name, Shop.tenant_id).order_by(Shop.id)
            )
            assert shops.all() == [
                (1, "a1!", "a"),
                (2, "b-shop", "b"),
                (8, "a8", "a"),
                (9, "a9", "a"),
            ]
            labels = await session.execute(sa.select(Item.label).where(Item.id.in_([1, 3])))
            assert sorted(labels.scalars()) == ["item 1", "item 3"]


async def _shops(db: AsyncDatabase) -> list[tuple[int, str, str]]:
    with every_tenant():
        async with db.session() as session:
            found = await session.execute(
                sa.select(Shop.id, Shop.name, Shop.tenant_id).order_by(Shop.id)
            )
            return [(i, name, owner) for i, name, owner in found.all()]


def _insert(backend: str) -> Any:
    return postgresql.insert if backend == "postgres" else sqlite.insert


def _overwriting(case: str, backend: str) -> Any:
    """An upsert (or replace) under tenant a meeting tenant b's shop 2 (code B1)."""
    insert = _insert(backend)
    theirs = insert(Shop).values(id=2, code="X", name="stolen")
    set_ = {"name": "stolen"}
    if case == "the primary key's server name":  # the model leaves it unnamed
        return theirs.on_conflict_do_update(constraint="tenant_shops_pkey", set_=set_)
    if case == "a unique constraint's server name":
        code = insert(Shop).values(id=9, code="B1", name="stolen")
        return code.on_conflict_do_update(constraint="tenant_shops_code_key", set_=set_)
    if case == "a constraint name nobody knows":
        return theirs.on_conflict_do_update(constraint="nowhere", set_=set_)
    if case == "no conflict target":  # SQLite: any unique key
        return theirs.on_conflict_do_update(set_=set_)
    assert case == "OR REPLACE"
    return sa.insert(Shop).prefix_with("OR REPLACE").values(id=2, code="X", name="stolen")


@pytest.mark.parametrize(
    ("case", "backend", "error", "match"),
    [
        pytest.param(case, backend, error, match, id=case)
        for case, backend, error, match in [
            ("the primary key's server name", "postgres", TenantMismatchError, "another tenant"),
            ("a unique constraint's server name", "postgres", TenantMismatchError, "another"),
            ("a constraint name nobody knows", "postgres", UnscopedStatementError, "index_elem"),
            ("no conflict target", "sqlite", UnscopedStatementError, "index_elements"),
            ("OR REPLACE", "sqlite", UnscopedStatementError, "index_elements"),
        ]
    ],
)
async def test_an_upsert_never_overwrites_another_tenants_row_whatever_its_conflict_target(
    async_database: AsyncDatabase,
    db_backend: str,
    case: str,
    backend: str,
    error: type[Exception],
    match: str,
) -> None:
    if db_backend != backend:
        pytest.skip(f"{case}: {backend} only")
    await seed(async_database)
    with tenant("a"), pytest.raises(error, match=match):
        async with async_database.transaction() as session:
            await session.execute(_overwriting(case, db_backend))
    assert await _shops(async_database) == [(1, "a-shop", "a"), (2, "b-shop", "b")]


async def test_an_upsert_changes_the_tenants_own_rows_only(
    async_database: AsyncDatabase, db_backend: str
) -> None:
    await seed(async_database)
    insert = _insert(db_backend)
    own = insert(Shop).values(id=1, code="A1", name="a1!")
    target: dict[str, Any] = (
        {"constraint": "tenant_shops_pkey"}
        if db_backend == "postgres"
        else {"index_elements": ["id"]}
    )
    with tenant("a"):
        async with async_database.transaction() as session:
            await session.execute(own.on_conflict_do_update(**target, set_={"name": "a1!"}))
            # a key only the database computes is not checked beforehand: the DO UPDATE itself
            # leaves another tenant's row alone
            computed = insert(Shop).values(id=sa.func.abs(-2), code="X", name="stolen")
            await session.execute(
                computed.on_conflict_do_update(index_elements=["id"], set_={"name": "stolen"})
            )
    assert await _shops(async_database) == [(1, "a1!", "a"), (2, "b-shop", "b")]


def _moving(case: str, backend: str) -> tuple[Any, dict[str, Any] | None]:
    """A write under tenant a that would move a row to, or name, tenant b."""
    shops = table(Shop)
    if case == "an UPDATE's parameters":
        return sa.update(shops).where(shops.c.id == 1), {"tenant_id": "b"}
    if case == "an upsert's set_":  # moving the tenant's own row it meets
        own = _insert(backend)(Shop).values(id=1, code="A1", name="a")
        return own.on_conflict_do_update(index_elements=["id"], set_={"tenant_id": "b"}), None
    # the tenant as a SQL expression, whose value only the database knows
    if case == "a function in an INSERT":
        return sa.insert(Shop).values(id=3, code="C", name="c", tenant_id=sa.func.lower("B")), None
    if case == "literal_column() in an INSERT":
        quoted: Any = sa.literal_column("'b'")
        return sa.insert(shops).values(id=3, code="C", name="c", tenant_id=quoted), None
    if case == "a function in an UPDATE":
        return sa.update(Shop).where(Shop.id == 1).values(tenant_id=sa.func.lower("B")), None
    assert case == "INSERT ... SELECT"
    names = sa.select(sa.literal(3), sa.literal("C"), sa.literal("c"), sa.literal("b"))
    return sa.insert(Shop).from_select(["id", "code", "name", "tenant_id"], names), None


@pytest.mark.parametrize(
    "case",
    [
        "an UPDATE's parameters",
        "an upsert's set_",
        "a function in an INSERT",
        "literal_column() in an INSERT",
        "a function in an UPDATE",
        "INSERT ... SELECT",
    ],
)
async def test_no_write_moves_a_row_to_or_names_another_tenant_by_sql(
    async_database: AsyncDatabase, db_backend: str, case: str
) -> None:
    await seed(async_database)
    statement, parameters = _moving(case, db_backend)
    with tenant("a"), pytest.raises(TenantMismatchError, match="tenant_id"):
        async with async_database.transaction() as session:
            await session.execute(statement, parameters)
    assert await _shops(async_database) == [(1, "a-shop", "a"), (2, "b-shop", "b")]


async def test_a_write_may_name_the_current_tenant_or_leave_it_out(
    async_database: AsyncDatabase, db_backend: str
) -> None:
    await seed(async_database)
    with tenant("a"):
        async with async_database.transaction() as session:
            upsert = _insert(db_backend)(Shop).values(id=1, code="A1", name="a1!")
            excluded = upsert.excluded
            set_ = {"name": excluded.name, "tenant_id": excluded.tenant_id}
            await session.execute(upsert.on_conflict_do_update(index_elements=["id"], set_=set_))
            select_c = sa.select(sa.literal(3), sa.literal("C"), sa.literal("c"))
            await session.execute(sa.insert(Shop).from_select(["id", "code", "name"], select_c))
            await session.execute(
                sa.update(table(Shop)).where(table(Shop).c.id == 3), {"name": "c!"}
            )
    assert await _shops(async_database) == [(1, "a1!", "a"), (2, "b-shop", "b"), (3, "c!", "a")]


async def test_an_object_of_another_tenant_held_by_the_session_is_not_read_again(
    async_database: AsyncDatabase,
) -> None:
    # refreshing an object (or an expired attribute) reads its row by identity, and SQLAlchemy
    # gives such a load no loader criteria: the scoping adds the tenant's condition
    await seed(async_database)
    async with async_database.session() as session:
        with tenant("b"):
            theirs = await session.get(Shop, 2)
            assert theirs is not None
        with tenant("a"):
            with pytest.raises(sa.exc.InvalidRequestError, match="Could not refresh"):
                await session.refresh(theirs, ["name"])
        with tenant("b"):
            await session.refresh(theirs, ["name"])
            assert theirs.name == "b-shop"


async def test_an_update_by_primary_key_changes_the_tenants_own_rows_only(
    async_database: AsyncDatabase,
) -> None:
    # SQLAlchemy sends the rows of update(Model) with a list of parameters without the
    # statement's options, so the guard refused them even for the tenant's own rows
    await seed(async_database)
    with tenant("a"):
        async with AsyncUnitOfWork(async_database) as uow:
            own = [{"id": 1, "label": "one"}, {"id": 2, "label": "two"}]
            await uow.session.execute(sa.update(Item), own)
        for theirs in ([{"id": 3, "label": "taken"}], [*own, {"id": 4, "label": "taken"}]):
            with pytest.raises(TenantMismatchError, match="another tenant"):
                async with AsyncUnitOfWork(async_database) as uow:
                    await uow.session.execute(sa.update(Item), theirs)
    with every_tenant():
        async with async_database.session() as session:
            rows = await session.execute(sa.select(Item.id, Item.label).order_by(Item.id))
            assert rows.all() == [(1, "one"), (2, "two"), (3, "item 3"), (4, "item 4")]


def test_stamp_rows_gives_bulk_insert_rows_the_current_tenant() -> None:
    rows = [{"id": 1, "label": "x"}]
    with tenant("a"):
        assert stamp_rows(Item, rows) == [{"id": 1, "label": "x", "tenant_id": "a"}]
        with pytest.raises(TenantMismatchError):
            stamp_rows(Item, [{"id": 1, "tenant_id": "b"}])
        assert stamp_rows(Note, rows) is rows
    with pytest.raises(TenantRequiredError):
        stamp_rows(Item, rows)
