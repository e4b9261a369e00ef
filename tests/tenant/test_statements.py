"""Statements run through a session: where tenant scoping cannot confine every read and write
of a tenant-scoped table to the tenant (SQL text naming the table inside the statement, a
Table or an alias of one read beside the models or in a subquery, a table that only shares the
name), the statement is refused, inside a tenant (UnscopedStatementError) and outside any
(TenantRequiredError), leaving nothing written; where it can (the models in the subqueries of
an INSERT, UPDATE or DELETE, the tables an UPDATE reads besides its target, a Core select of an
alias), the statement runs on the tenant's rows only. Sync only: what is judged is the
statement, the same for every driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from dalkit import Database
from dalkit.query.tenant import (
    TenantRequiredError,
    UnscopedStatementError,
    every_tenant,
    tenant,
)

from .models import Item, Shop, table

SHOPS, ITEMS = table(Shop), table(Item)
Statement = Callable[[], Any]

REFUSED: dict[str, Statement] = {
    "literal_column() in a model's select": lambda: sa.select(
        Item.id, sa.literal_column("(SELECT count(*) FROM tenant_items)")
    ),
    "text() in a model's WHERE": lambda: sa.select(Item.id).where(
        sa.text("tenant_items.id IN (SELECT id FROM tenant_items)")
    ),
    "a statement hint": lambda: sa.select(Item.id).with_statement_hint(
        "UNION SELECT id FROM tenant_items"
    ),
    "a suffix": lambda: sa.select(Item.id).suffix_with("UNION SELECT id FROM tenant_items"),
    "a custom operator": lambda: sa.select(
        Item.id.op("+ (SELECT count(*) FROM tenant_items) +")(0)
    ),
    "literal_column() in an UPDATE's values": lambda: (
        sa.update(Item)
        .where(Item.id == 1)
        .values(label=sa.literal_column("(SELECT label FROM tenant_items WHERE id = 3)"))
    ),
    "text() in a DELETE's WHERE": lambda: sa.delete(Item).where(
        sa.text("EXISTS (SELECT 1 FROM tenant_items WHERE label = 'item 3')")
    ),
    "an alias of the Table beside a model": lambda: (
        lambda x: sa.select(Item.id, x.c.label).where(x.c.shop_id == Item.shop_id)
    )(ITEMS.alias("x")),
    "another model's Table beside a model": lambda: sa.select(Shop.id, ITEMS.c.label).where(
        ITEMS.c.shop_id == Shop.id
    ),
    "a Table joined to a model": lambda: sa.select(Shop.id).join(ITEMS, ITEMS.c.shop_id == Shop.id),
    "a table of the same name in a subquery": lambda: sa.select(
        Item.id, sa.select(sa.func.count()).select_from(sa.table("tenant_items")).scalar_subquery()
    ),
    "an alias of the Table in a subquery": lambda: sa.select(
        Item.id, sa.select(sa.func.count(ITEMS.alias().c.id)).scalar_subquery()
    ),
    "a Table in a subquery read through its columns": lambda: (
        lambda sub: sa.select(Item.id, sub.c.label).where(sub.c.id == Item.id)
    )(sa.select(ITEMS.c.id, ITEMS.c.label).subquery()),
    "the Table beside a model joined in a subquery": lambda: (
        sa.select(Item.id, SHOPS.c.name)
        .where(SHOPS.c.id == Item.shop_id)
        .where(Item.id.in_(sa.select(Item.id).join(Item.shop)))
    ),
    "a Table in a multi-row INSERT's values": lambda: sa.insert(Item).values(
        [{"id": 5, "shop_id": 1, "label": sa.select(ITEMS.c.label).scalar_subquery()}]
    ),
    "a Table in a subquery of an UPDATE": lambda: (
        sa.update(Item)
        .where(Item.id == 1)
        .values(label=sa.select(ITEMS.c.label).where(ITEMS.c.id == 3).scalar_subquery())
    ),
    "a Table in a subquery of a Core UPDATE": lambda: (
        sa.update(ITEMS)
        .where(ITEMS.c.id == 1)
        .values(label=sa.select(ITEMS.c.label).where(ITEMS.c.id == 3).scalar_subquery())
    ),
    "a Table in a DELETE's EXISTS": lambda: sa.delete(Item).where(
        sa.exists(sa.select(ITEMS.c.id).where(ITEMS.c.label == "item 3"))
    ),
    "INSERT ... SELECT from the Table": lambda: sa.insert(ITEMS).from_select(
        ["id", "shop_id", "label", "tenant_id"],
        sa.select(ITEMS.c.id + 10, ITEMS.c.shop_id, ITEMS.c.label, sa.literal("a")),
    ),
}


@pytest.fixture
def seeded(database: Database) -> Database:
    """Tenant a: shop 1, items 1 and 2; tenant b: shop 2, item 3, and item 4 under shop 1."""
    with every_tenant(), database.transaction() as session:
        session.add_all([Shop(id=1, code="A", name="a", tenant_id="a")])
        session.add_all([Shop(id=2, code="B", name="b", tenant_id="b")])
        session.flush()
        for ident, shop, owner in ((1, 1, "a"), (2, 1, "a"), (3, 2, "b"), (4, 1, "b")):
            session.add(Item(id=ident, shop_id=shop, label=f"item {ident}", tenant_id=owner))
    return database


def _rows(db: Database) -> list[tuple[Any, ...]]:
    with every_tenant(), db.session() as session:
        shops = session.execute(sa.select(Shop.id, Shop.name, Shop.tenant_id).order_by(Shop.id))
        items = session.execute(
            sa.select(Item.id, Item.label, Item.tenant_id).order_by(Item.id)
        ).all()
        return [*shops.all(), *items]


@pytest.mark.parametrize("statement", REFUSED.values(), ids=REFUSED)
def test_a_statement_scoping_cannot_confine_is_refused_inside_a_tenant(
    seeded: Database, statement: Statement
) -> None:
    before = _rows(seeded)
    with tenant("a"), pytest.raises(UnscopedStatementError, match=r"tenant_\w+' inside tenant"):
        with seeded.transaction() as session:
            session.execute(statement())
    assert _rows(seeded) == before


@pytest.mark.parametrize("statement", REFUSED.values(), ids=REFUSED)
def test_outside_any_tenant_the_same_statements_raise_tenant_required(
    seeded: Database, statement: Statement
) -> None:
    before = _rows(seeded)
    with pytest.raises(TenantRequiredError, match="every_tenant"):
        with seeded.transaction() as session:
            session.execute(statement())
    assert _rows(seeded) == before


SEEDED = [
    (1, "a", "a"),
    (2, "b", "b"),
    (1, "item 1", "a"),
    (2, "item 2", "a"),
    (3, "item 3", "b"),
    (4, "item 4", "b"),
]
# tenant b's item 3, read in a subquery of a write under tenant a: no row
UNSEEN = sa.func.coalesce(sa.select(Item.label).where(Item.id == 3).scalar_subquery(), "unseen")


@pytest.mark.parametrize("core", [False, True], ids=["ORM UPDATE", "Core UPDATE"])
def test_a_model_in_a_subquery_of_an_update_is_scoped(seeded: Database, core: bool) -> None:
    update = (
        sa.update(ITEMS).where(ITEMS.c.id == 1) if core else sa.update(Item).where(Item.id == 1)
    )
    with tenant("a"), seeded.transaction() as session:
        session.execute(update.values(label=UNSEEN))
    assert _rows(seeded)[2] == (1, "unseen", "a")


def test_a_model_in_the_exists_of_a_delete_is_scoped(seeded: Database) -> None:
    with tenant("a"), seeded.transaction() as session:
        # tenant b's item 3 exists, but not under tenant a: nothing goes
        session.execute(sa.delete(Item).where(sa.exists(sa.select(Item.id).where(Item.id == 3))))
    assert _rows(seeded) == SEEDED


def test_an_update_reads_the_tenant_rows_only_of_the_tables_it_reads_besides(
    seeded: Database,
) -> None:
    with tenant("a"), seeded.transaction() as session:
        # UPDATE ... FROM tenant_items: item 4, under shop 1, is tenant b's
        session.execute(
            sa.update(Shop).where(Shop.id == Item.shop_id, Item.id == 4).values(name=Item.label)
        )
        aliased = sa.orm.aliased(Item)
        session.execute(
            sa.update(Shop).where(Shop.id == aliased.shop_id, aliased.id == 4).values(name="met")
        )
    assert _rows(seeded) == SEEDED


def test_insert_select_of_a_model_copies_the_tenant_rows_stamped(seeded: Database) -> None:
    copied = sa.select(Item.id + 10, Item.shop_id, Item.label)
    with tenant("a"), seeded.transaction() as session:
        session.execute(sa.insert(Item).from_select(["id", "shop_id", "label"], copied))
    assert _rows(seeded) == [*SEEDED, (11, "item 1", "a"), (12, "item 2", "a")]


def test_a_core_select_of_an_alias_is_scoped(seeded: Database) -> None:
    other = ITEMS.alias("other")
    with tenant("a"), seeded.transaction() as session:
        assert session.execute(sa.select(other.c.id).order_by(other.c.id)).scalars().all() == [
            1,
            2,
        ]
        # item 4, under shop 1, is tenant b's
        beside = sa.select(SHOPS.c.id, other.c.label).where(other.c.shop_id == SHOPS.c.id)
        assert session.execute(beside.order_by(other.c.id)).all() == [(1, "item 1"), (1, "item 2")]


def test_a_table_in_an_upserts_set_is_refused(seeded: Database, db_backend: str) -> None:
    insert: Any = postgresql.insert if db_backend == "postgres" else sqlite.insert
    theirs = sa.select(ITEMS.c.label).where(ITEMS.c.id == 3).scalar_subquery()
    upsert = insert(Item).values(id=1, shop_id=1, label="x")
    before = _rows(seeded)
    with tenant("a"), pytest.raises(UnscopedStatementError, match="tenant_items' inside"):
        with seeded.transaction() as session:
            session.execute(
                upsert.on_conflict_do_update(index_elements=["id"], set_={"label": theirs})
            )
    assert _rows(seeded) == before
