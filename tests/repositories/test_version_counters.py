"""A model's version counter (``version_id_col``) moves on with ``bulk_update`` and ``upsert``
as with a flush's UPDATE, so an entity read before them is stale (``StaleDataError``) instead of
overwriting what they wrote: ``bulk_update`` left the counter as it was, and ``upsert`` wrote
the one given (a new row without one broke its NOT NULL). A counter computed by a Python
function is refused by these writes."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    Database,
    InMemoryRepository,
    InvalidQueryError,
    Repository,
)


class _Base(DeclarativeBase):
    pass


class Doc(_Base):
    __tablename__ = "versioned_docs"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(sa.String(20))
    version: Mapped[int] = mapped_column(nullable=False)
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Tagged(_Base):
    __tablename__ = "uuid_versioned_docs"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(sa.String(20))
    version: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    __mapper_args__ = {  # noqa: RUF012
        "version_id_col": version,
        "version_id_generator": lambda _: uuid.uuid4().hex,
    }


class Docs(Repository[Doc]):
    pass


class AsyncDocs(AsyncRepository[Doc]):
    pass


class TaggedDocs(Repository[Tagged]):
    pass


def test_bulk_update_and_upsert_move_the_version_counter_on(database: Database) -> None:
    _Base.metadata.create_all(database.engine)
    with database.session_factory() as session:
        docs = Docs(session)
        held = docs.add(Doc(id=1, title="a"))
        assert held.version == 1
        docs.bulk_update([{"id": 1, "title": "bulk"}])
        held.title = "stale"  # read at version 1; the row is at 2 now
        with pytest.raises(StaleDataError):
            session.flush()
        session.rollback()
    with database.session_factory() as session:
        docs = Docs(session)
        assert docs.upsert({"id": 2, "title": "new"}, on=["id"]).version == 1
        held = docs.get(2)
        # the counter given is the new row's, not what an existing row's becomes
        assert docs.upsert({"id": 2, "title": "again", "version": 1}, on=["id"]).version == 2
        assert docs.get(2) is held
        assert held.title == "again"
        docs.upsert_many([{"id": 2, "title": "many"}, {"id": 3, "title": "c"}], on=["id"])
        session.expire_all()
        assert [(d.id, d.version) for d in docs.get_many([2, 3])] == [(2, 3), (3, 1)]
        session.rollback()


def test_a_version_counter_of_a_python_function_is_refused_by_bulk_writes(
    database: Database,
) -> None:
    _Base.metadata.create_all(database.engine)
    with database.session_factory() as session:
        tagged = TaggedDocs(session)
        tagged.add(Tagged(id=1, title="a"))
        with pytest.raises(InvalidQueryError, match="version counter"):
            tagged.bulk_update([{"id": 1, "title": "b"}])
        with pytest.raises(InvalidQueryError, match="version counter"):
            tagged.upsert({"id": 1, "title": "b"}, on=["id"])
        session.rollback()


async def test_an_async_bulk_update_moves_the_version_counter_on(
    async_database: AsyncDatabase,
) -> None:
    async with async_database.engine.begin() as connection:
        await connection.run_sync(_Base.metadata.create_all)
    async with async_database.session_factory() as session:
        docs = AsyncDocs(session)
        held = await docs.add(Doc(id=1, title="a"))
        await docs.bulk_update([{"id": 1, "title": "bulk"}])
        held.title = "stale"
        with pytest.raises(StaleDataError):
            await session.flush()
        await session.rollback()
        assert (await docs.upsert({"id": 2, "title": "new"}, on=["id"])).version == 1
        assert (await docs.upsert({"id": 2, "title": "again"}, on=["id"])).version == 2
        await session.rollback()


def test_the_in_memory_repository_keeps_a_version_counter_as_the_flush_does() -> None:
    docs = InMemoryRepository.mirroring(Docs)([])
    versions = [docs.add(Doc(id=1, title="a")).version]
    docs.update(docs.get(1), title="b")
    versions.append(docs.get(1).version)
    docs.update_many([{"id": 1, "title": "c"}])
    versions.append(docs.get(1).version)
    docs.bulk_update([{"id": 1, "title": "d"}])
    versions.append(docs.get(1).version)
    versions.append(docs.upsert({"id": 1, "title": "e", "version": 1}, on=["id"]).version)
    versions.append(docs.upsert({"id": 2, "title": "f"}, on=["id"]).version)
    assert versions == [1, 2, 3, 4, 5, 1]
