"""The in-memory repository keeps tenant scope as the SQL repositories do: inside
``tenant(t)`` its reads see ``t``'s rows, new rows are stamped with ``t``, and a write naming or
meeting another tenant's row is refused; outside any tenant reads and writes raise. And a
repository ``add`` or ``update`` refused by tenant scoping leaves nothing pending in the
session, so no later flush writes it (under another tenant, say)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dalkit import (
    AsyncDatabase,
    AsyncInMemoryRepository,
    AsyncRepository,
    Database,
    InMemoryRepository,
    Repository,
)
from dalkit.errors import DalkitError
from dalkit.query.tenant import (
    TenantMismatchError,
    TenantRequiredError,
    every_tenant,
    tenant,
)

from .models import Note, Shop


class Shops(Repository[Shop]):
    cursor_secret = "the memory tenants' cursor secret"


class AsyncShops(AsyncRepository[Shop]):
    pass


class Notes(Repository[Note]):
    pass


def _shown(value: Any) -> Any:
    if isinstance(value, Shop):
        return (value.id, value.code, value.tenant_id)
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if hasattr(value, "items") and hasattr(value, "has_more"):
        return _shown(value.items)
    if hasattr(value, "total"):
        return [_shown(value.items), value.total]
    return value


STEPS: list[tuple[str | None, Callable[[Any], Any]]] = [
    (None, lambda r: r.count()),
    (None, lambda r: r.add(Shop(code="X", name="no tenant"))),
    ("a", lambda r: r.add(Shop(code="A1", name="a"))),
    ("a", lambda r: r.add(Shop(code="A2", name="a", tenant_id="b"))),
    ("b", lambda r: r.add_many([Shop(code="B1", name="b"), Shop(code="B2", name="b")])),
    ("b", lambda r: r.bulk_insert([{"code": "B3", "name": "b"}])),
    ("b", lambda r: r.bulk_insert([{"code": "B4", "name": "b", "tenant_id": "a"}])),
    (None, lambda r: r.bulk_insert([{"code": "N1", "name": "n", "tenant_id": "a"}])),
    ("a", lambda r: r.list(sort="id")),
    ("b", lambda r: r.list(sort="-code")),
    ("b", lambda r: [r.count(), r.exists(code="A1"), r.get_or_none(1), r.get_many([1, 2])]),
    ("b", lambda r: [r.first(sort="id"), r.search("1"), r.paginate(per_page=2)]),
    ("b", lambda r: r.paginate_cursor(limit=5)),
    ("b", lambda r: r.update(1, name="taken")),
    ("b", lambda r: r.update_many([{"id": 1, "name": "taken"}])),
    ("b", lambda r: r.bulk_update([{"id": 1, "name": "taken"}])),
    ("b", lambda r: r.delete_where(code="A1")),
    ("b", lambda r: r.upsert({"code": "A1", "name": "taken"}, on=["code"])),
    ("b", lambda r: r.upsert({"code": "A1", "name": "taken"}, on=["code"], update=[])),
    ("b", lambda r: r.upsert({"code": "B9", "name": "b"}, on=["code"])),
    ("a", lambda r: r.delete(1)),
]


def _run(repository: Any, step: tuple[str | None, Callable[[Any], Any]]) -> Any:
    who, call = step
    try:
        if who is None:
            return _shown(call(repository))
        with tenant(who):
            return _shown(call(repository))
    except DalkitError as error:
        return type(error).__name__


def test_the_in_memory_repository_keeps_tenant_scope_as_the_sql_repository(
    database: Database,
) -> None:
    memory = InMemoryRepository.mirroring(Shops)()
    expected = [_run(memory, step) for step in STEPS]
    with database.session_factory() as session:
        answers = [_run(Shops(session), step) for step in STEPS]
        session.rollback()
    assert answers == expected
    assert expected[:4] == [
        "TenantRequiredError",
        "TenantRequiredError",
        (1, "A1", "a"),
        "TenantMismatchError",
    ]
    assert expected[8] == [(1, "A1", "a")]  # b's rows, and nothing refused, are not a's
    assert "TenantMismatchError" in expected[15]  # bulk_update of a's row, as check_keys
    with every_tenant():
        codes = sorted((s.code, s.tenant_id) for s in memory.list())
    assert codes == [("B1", "b"), ("B2", "b"), ("B3", "b"), ("B9", "b")]


async def test_the_async_in_memory_repository_reads_and_stamps_the_current_tenant() -> None:
    memory = AsyncInMemoryRepository.mirroring(AsyncShops)()
    with pytest.raises(TenantRequiredError):
        await memory.add(Shop(code="X", name="x"))
    with tenant("a"):
        await memory.add(Shop(code="A1", name="a"))
    with tenant("b"):
        stored = await memory.add(Shop(code="B1", name="b"))
        assert stored.tenant_id == "b"
        assert [s.code for s in await memory.list()] == ["B1"]
        assert await memory.get_or_none(1) is None
        with pytest.raises(TenantMismatchError):
            await memory.update(2, tenant_id="a")
        assert stored.tenant_id == "b"
    with pytest.raises(TenantRequiredError):
        await memory.count()


def test_a_model_without_tenant_is_read_and_written_anywhere_in_memory() -> None:
    notes = InMemoryRepository.mirroring(Notes)([Note(id=1, text="seeded")])
    notes.add(Note(text="outside"))
    with tenant("a"):
        assert notes.count() == 2


def test_in_memory_seeds_keep_their_tenants_outside_any_tenant() -> None:
    shops = InMemoryRepository.mirroring(Shops)(
        [
            Shop(id=1, code="A1", name="a", tenant_id="a"),
            Shop(id=2, code="B1", name="b", tenant_id="b"),
        ]
    )
    with tenant("a"):
        assert [s.code for s in shops.list()] == ["A1"]


def test_an_add_refused_by_tenant_scope_leaves_nothing_for_a_later_flush(
    database: Database,
) -> None:
    with database.session_factory() as session:
        shops = Shops(session)
        with pytest.raises(TenantRequiredError):
            shops.add(Shop(code="X", name="outside any tenant"))
        with tenant("a"):
            with pytest.raises(TenantMismatchError):
                shops.add(Shop(code="B1", name="names b", tenant_id="b"))
            shops.add(Shop(code="A1", name="a"))  # the refused ones failed this flush before
        with tenant("b"):
            shops.add(Shop(code="B2", name="b"))
        session.commit()
    with every_tenant(), database.session_factory() as session:
        stored = sorted((s.code, s.tenant_id) for s in Shops(session).list())
    assert stored == [("A1", "a"), ("B2", "b")]  # X went to a, B1 to b


async def test_an_async_add_refused_by_tenant_scope_leaves_nothing_pending(
    async_database: AsyncDatabase,
) -> None:
    async with async_database.session_factory() as session:
        shops = AsyncShops(session)
        with tenant("a"):
            with pytest.raises(TenantMismatchError):
                await shops.add(Shop(code="B1", name="names b", tenant_id="b"))
            assert not session.new
            await shops.add(Shop(code="A1", name="a"))
        await session.commit()
    with every_tenant():
        async with async_database.session_factory() as session:
            stored = [(s.code, s.tenant_id) for s in await AsyncShops(session).list()]
    assert stored == [("A1", "a")]


def test_an_update_refused_by_tenant_scope_leaves_nothing_for_a_later_flush(
    database: Database,
) -> None:
    with tenant("a"), database.transaction() as session:
        Shops(session).add(Shop(code="A1", name="a"))
    with database.session_factory() as session:
        shops = Shops(session)
        with tenant("a"):
            with pytest.raises(TenantMismatchError):
                shops.update(1, tenant_id="b", name="moved")
            with pytest.raises(TenantMismatchError):
                shops.update_many([{"id": 1, "tenant_id": "b"}])
            assert shops.get(1).tenant_id == "a"
            shops.add(Shop(code="A2", name="a"))  # the refused change failed this flush before
        with every_tenant():
            session.commit()  # and this one wrote it: the row moved to tenant b
    with every_tenant(), database.session_factory() as session:
        stored = sorted((s.code, s.name, s.tenant_id) for s in Shops(session).list())
    assert stored == [("A1", "a", "a"), ("A2", "a", "a")]


async def test_an_async_update_refused_by_tenant_scope_is_not_written_later(
    async_database: AsyncDatabase,
) -> None:
    with tenant("a"):
        async with async_database.transaction() as session:
            await AsyncShops(session).add(Shop(code="A1", name="a"))
    async with async_database.session_factory() as session:
        with tenant("a"):
            with pytest.raises(TenantMismatchError):
                await AsyncShops(session).update(1, tenant_id="b")
        with every_tenant():
            await session.commit()
            assert [s.tenant_id for s in await AsyncShops(session).list()] == ["a"]
