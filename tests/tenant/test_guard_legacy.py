"""Tenant scoping's guard, sync only: the Session's legacy bulk methods
(``bulk_insert_mappings``, ``bulk_save_objects``, ``bulk_update_mappings``, which AsyncSession
lacks and which run neither statement nor flush events) are refused for tenant-scoped models,
inside a tenant and outside any, leaving nothing written, and ``every_tenant()`` lets them
through; a table that only shares a tenant-scoped table's name, in another database, is not
guarded, while a tenant-scoped table made by migrations is, on an engine that created other
tables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import Database
from dalkit.query.tenant import (
    TenantError,
    TenantRequiredError,
    UnscopedStatementError,
    every_tenant,
    tenant,
)

from .models import Item, Note, Shop

LEGACY: dict[str, Callable[[Session], Any]] = {
    "bulk_insert_mappings": lambda s: s.bulk_insert_mappings(
        Item, [{"id": 9, "shop_id": 1, "label": "x", "tenant_id": "b"}]
    ),
    "bulk_save_objects": lambda s: s.bulk_save_objects(
        [Item(id=9, shop_id=1, label="x", tenant_id="b")]
    ),
    "bulk_update_mappings": lambda s: s.bulk_update_mappings(Item, [{"id": 1, "label": "x"}]),
}


@pytest.fixture
def seeded(database: Database) -> Database:
    with every_tenant(), database.transaction() as session:
        session.add(Shop(id=1, code="A", name="a", tenant_id="a"))
        session.flush()
        session.add(Item(id=1, shop_id=1, label="item 1", tenant_id="a"))
    return database


def _items(db: Database) -> list[tuple[int, str, str]]:
    with every_tenant(), db.session() as session:
        found = session.execute(sa.select(Item.id, Item.label, Item.tenant_id).order_by(Item.id))
        return [(i, label, owner) for i, label, owner in found.all()]


@pytest.mark.parametrize("method", LEGACY.values(), ids=LEGACY)
@pytest.mark.parametrize("scope", ["inside a tenant", "outside any tenant"])
def test_a_legacy_bulk_method_is_refused(
    seeded: Database, method: Callable[[Session], Any], scope: str
) -> None:
    expected: type[TenantError] = (
        UnscopedStatementError if scope == "inside a tenant" else TenantRequiredError
    )
    with tenant("a") if scope == "inside a tenant" else contextlib.nullcontext():
        with pytest.raises(expected, match="tenant_items"):
            with seeded.transaction() as session:
                method(session)
    assert _items(seeded) == [(1, "item 1", "a")]


def test_every_tenant_lets_a_legacy_bulk_method_through(seeded: Database) -> None:
    with every_tenant(), seeded.transaction() as session:
        LEGACY["bulk_insert_mappings"](session)
        session.bulk_insert_mappings(Note, [{"id": 1, "text": "of no tenant"}])
    assert _items(seeded) == [(1, "item 1", "a"), (9, "x", "b")]


def test_a_table_of_the_same_name_in_another_database_is_not_guarded(
    seeded: Database, tmp_path: Path
) -> None:
    other = sa.MetaData()
    sa.Table("tenant_items", other, sa.Column("id", sa.Integer, primary_key=True))
    with Database(f"sqlite:///{tmp_path / 'other.db'}") as elsewhere:
        elsewhere.create_all(other)
        with tenant("a"):
            assert elsewhere.sql("INSERT INTO tenant_items (id) VALUES (1) RETURNING id") == [
                {"id": 1}
            ]
            with pytest.raises(UnscopedStatementError):  # the tenant-scoped one still is
                seeded.sql("SELECT id FROM tenant_items")


def test_tables_made_by_migrations_are_guarded_on_an_engine_that_created_other_tables(
    seeded: Database, db_url: str
) -> None:
    # the tenant tables were made through another engine, as migrations make them; the
    # application's Database creates tables of its own (dalkit's, say) through its engine
    own = sa.MetaData()
    sa.Table("guard_app_own", own, sa.Column("id", sa.Integer, primary_key=True))
    with Database(db_url) as app:
        app.create_all(own)
        with tenant("a"), pytest.raises(UnscopedStatementError, match="tenant_items"):
            app.sql("SELECT label FROM tenant_items")
        with pytest.raises(TenantRequiredError, match="tenant_items"):
            app.sql("SELECT label FROM tenant_items")
        assert app.sql("SELECT id FROM guard_app_own") == []
