"""The audit's guard and the Session's legacy bulk methods, which run no flush or statement
event (so the audit cannot record them) although SQLAlchemy marks the session as flushing
while they run; a flush that failed leaves no mark behind; the repositories' bulk writes,
their bisection of a bad chunk included, still pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database, Repository, UniqueViolationError, UnitOfWork
from dalkit.audit import UnauditedWriteError, unaudited
from dalkit.errors import BulkLoadError

from .models import Author

LEGACY: dict[str, Callable[[Session], Any]] = {
    "bulk_insert_mappings": lambda s: s.bulk_insert_mappings(
        Author, [{"id": 2, "email": "b@x", "name": "B"}]
    ),
    "bulk_save_objects": lambda s: s.bulk_save_objects([Author(id=2, email="b@x", name="B")]),
    "bulk_update_mappings": lambda s: s.bulk_update_mappings(Author, [{"id": 1, "name": "Z"}]),
}


class Authors(Repository[Author]):
    pass


def _names(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(sa.select(Author.name).order_by(Author.id)))


@pytest.fixture
def author(database: Database) -> Database:
    with UnitOfWork(database, actor="setup") as uow:
        uow.session.add(Author(id=1, email="a@x", name="A"))
    return database


@pytest.mark.parametrize("method", sorted(LEGACY))
def test_the_legacy_bulk_methods_are_refused(author: Database, method: str) -> None:
    with pytest.raises(UnauditedWriteError, match="audit_authors"), author.transaction() as s:
        LEGACY[method](s)
    assert _names(author) == ["A"]
    with unaudited(), author.transaction() as session:
        LEGACY[method](session)
    assert _names(author) in (["Z"], ["A", "B"])


async def test_the_legacy_bulk_methods_are_refused_through_run_sync(
    async_database: AsyncDatabase,
) -> None:
    with pytest.raises(UnauditedWriteError, match="audit_authors"):
        async with async_database.transaction() as session:
            await session.run_sync(LEGACY["bulk_insert_mappings"])


def test_a_failed_flush_leaves_no_mark_that_lets_a_legacy_write_through(author: Database) -> None:
    with pytest.raises(UnauditedWriteError), author.transaction() as session:
        with pytest.raises(UniqueViolationError), session.begin_nested():
            session.add(Author(id=1, email="dup@x", name="clash"))  # the primary key is taken
            session.flush()
        LEGACY["bulk_update_mappings"](session)
    assert _names(author) == ["A"]


def test_repository_bulk_writes_pass_and_a_bad_row_is_still_found(author: Database) -> None:
    with author.transaction() as session:
        Authors(session).bulk_insert([{"id": 2, "email": "b@x", "name": "B"}])
        Authors(session).bulk_update([{"id": 1, "name": "Z"}])
    assert _names(author) == ["Z", "B"]
    rows = [{"id": n, "email": f"{n}@x", "name": "n"} for n in range(3, 9)]
    rows[4]["email"] = "b@x"  # clashes with a row written before: the bisection finds it
    with pytest.raises(BulkLoadError) as found, author.transaction() as session:
        Authors(session).bulk_insert(rows, chunk_size=6)
    assert found.value.row_index == 4
    assert _names(author) == ["Z", "B"]
