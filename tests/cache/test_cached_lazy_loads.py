"""Entities served from the cache keep what the statement gave the ORM's entities for their
later lazy loads: a relationship of a soft-deletable model still hides the deleted rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import Database, RedisManager, Repository, SoftDeleteMixin
from dalkit.cache import MemoryBackend, QueryCache, RedisBackend, install


class _Base(DeclarativeBase):
    pass


class Shelf(_Base):
    __tablename__ = "cached_shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    volumes: Mapped[list[Volume]] = relationship(order_by="Volume.id")


class Volume(SoftDeleteMixin, _Base):
    __tablename__ = "cached_volumes"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(sa.ForeignKey("cached_shelves.id"))
    title: Mapped[str] = mapped_column(sa.String(40))


class Shelves(Repository[Shelf]):
    cache_ttl = 60


class Volumes(Repository[Volume]):
    pass


@pytest.fixture(params=["memory", "redis"])
def shelf_cache(db: Database, request: pytest.FixtureRequest) -> Iterator[QueryCache]:
    db.create_all(_Base.metadata)
    with db.transaction() as session:
        session.add(Shelf(id=1, name="top", volumes=[Volume(id=1, title="kept")]))
        session.add(Volume(id=2, shelf_id=1, title="gone"))
    with db.transaction() as session:
        Volumes(session).delete(2)
    if request.param == "memory":
        yield install(db, QueryCache(MemoryBackend(max_entries=100)))
        return
    manager = RedisManager(request.getfixturevalue("redis_url"))
    backend = RedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}")
    try:
        yield install(db, QueryCache(backend))
    finally:
        backend.close()
        manager.close()


def test_a_cached_entity_s_lazy_load_still_hides_soft_deleted_rows(
    db: Database, shelf_cache: QueryCache
) -> None:
    for _ in range(2):  # a miss, then a hit
        with db.transaction() as session:
            shelf = Shelves(session).get(1)
            assert [volume.title for volume in shelf.volumes] == ["kept"]
    assert shelf_cache.get_stats()["hits"] == 1
