"""The audit's guard: a write to an audited table through a path the audit cannot record (a Core
statement or raw SQL on a connection: ``engine.begin()``, ``session.connection()``,
``exec_driver_sql()``) is refused before it is sent, leaving nothing written; ``unaudited()``
lets it through unrecorded; other tables, reads and the recorded paths are untouched.
This async file is the source of ``test_guard.py``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncUnitOfWork
from dalkit.audit import UnauditedWriteError, unaudited
from dalkit.tables import audit_log

from .models import Author, Scratch, table

_INSERT = sa.insert(table(Author)).values(id=2, email="b@x", name="B")
_UPDATE = sa.update(table(Author)).where(table(Author).c.id == 1).values(name="Z")
_DELETE = sa.delete(table(Author)).where(table(Author).c.id == 1)
_RAW = "UPDATE audit_authors SET name = 'Z' WHERE id = 1"


async def _state(db: AsyncDatabase) -> tuple[list[tuple[int, str]], int]:
    """The authors (id, name) and the number of audit log rows."""
    async with db.session() as session:
        authors = await session.execute(sa.select(Author.id, Author.name).order_by(Author.id))
        logged = await session.execute(sa.select(sa.func.count()).select_from(audit_log))
        return [(i, n) for i, n in authors.all()], int(logged.scalar_one())


@pytest.fixture
async def author(async_database: AsyncDatabase) -> AsyncDatabase:
    async with AsyncUnitOfWork(async_database, actor="setup") as uow:
        uow.session.add(Author(id=1, email="a@x", name="A"))
    return async_database


@pytest.mark.parametrize(
    "statement", [_INSERT, _UPDATE, _DELETE], ids=["insert", "update", "delete"]
)
async def test_a_core_write_on_an_engine_connection_is_refused(
    author: AsyncDatabase, statement: sa.Executable
) -> None:
    before = await _state(author)
    with pytest.raises(UnauditedWriteError, match="of audit_authors"):
        async with author.engine.begin() as connection:
            await connection.execute(statement)
    assert await _state(author) == before


async def test_a_core_write_on_a_session_connection_is_refused(author: AsyncDatabase) -> None:
    before = await _state(author)
    with pytest.raises(UnauditedWriteError, match="UPDATE of audit_authors"):
        async with author.transaction() as session:
            connection = await session.connection()
            await connection.execute(_UPDATE)
    assert await _state(author) == before


async def test_raw_sql_on_a_connection_is_refused(author: AsyncDatabase) -> None:
    before = await _state(author)
    with pytest.raises(UnauditedWriteError, match="raw SQL writing audit_authors"):
        async with author.transaction() as session:
            connection = await session.connection()
            await connection.exec_driver_sql(_RAW)
    with pytest.raises(UnauditedWriteError, match="raw SQL writing audit_authors"):
        async with author.engine.begin() as connection:
            await connection.execute(sa.text(_RAW))
    assert await _state(author) == before


async def test_unaudited_lets_such_writes_through_unrecorded(author: AsyncDatabase) -> None:
    _, logged = await _state(author)
    with unaudited():
        async with author.engine.begin() as connection:
            await connection.execute(_UPDATE)
            await connection.exec_driver_sql(
                "INSERT INTO audit_authors (id, email, name) VALUES (3, 'c@x', 'C')"
            )
    assert await _state(author) == ([(1, "Z"), (3, "C")], logged)
    with pytest.raises(UnauditedWriteError):  # only inside the block
        async with author.engine.begin() as connection:
            await connection.execute(_DELETE)


async def test_unaudited_lets_raw_sql_through_a_session_and_db_sql_too(
    author: AsyncDatabase,
) -> None:
    _, logged = await _state(author)
    with unaudited():
        await author.sql("UPDATE audit_authors SET name = 'Y' WHERE id = 1")
        async with author.transaction() as session:
            await session.execute(
                sa.text("INSERT INTO audit_authors (id, email, name) VALUES (5, 'e@x', 'E')")
            )
            await session.execute(sa.update(Author).where(Author.id == 5).values(id=6))
    assert await _state(author) == ([(1, "Y"), (6, "E")], logged)
    with pytest.raises(UnauditedWriteError):  # only inside the block
        await author.sql(_RAW)


async def test_the_recorded_paths_other_tables_and_reads_are_untouched(
    author: AsyncDatabase,
) -> None:
    _, logged = await _state(author)
    async with author.engine.begin() as connection:
        await connection.execute(sa.insert(table(Scratch)).values(id=1, text="ok"))
        await connection.exec_driver_sql("UPDATE audit_scratch SET text = 'x'")
        found = await connection.execute(sa.select(table(Author).c.name))
        assert found.scalars().all() == ["A"]
    async with AsyncUnitOfWork(author, actor="core") as uow:  # recorded: through a session
        await uow.session.execute(_UPDATE)
        uow.session.add(Author(id=4, email="d@x", name="D"))  # recorded: the flush
    assert await _state(author) == ([(1, "Z"), (4, "D")], logged + 2)


@pytest.mark.parametrize("outer", ["select", "insert from select"])
async def test_a_write_in_a_with_clause_is_refused_even_through_a_session(
    author: AsyncDatabase, outer: str
) -> None:
    if author.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no INSERT/UPDATE/DELETE in a WITH clause")
    authors = table(Author)
    renamed = _UPDATE.returning(authors.c.id, authors.c.name).cte("renamed")
    statement: sa.Executable = sa.select(renamed.c.id)
    if outer == "insert from select":  # the outer INSERT writes an unaudited table
        copy = sa.select(renamed.c.id, renamed.c.name)
        statement = sa.insert(table(Scratch)).from_select(["id", "text"], copy)
    before = await _state(author)
    with pytest.raises(UnauditedWriteError, match=r"UPDATE \(in a WITH clause\) of audit_authors"):
        async with author.transaction() as session:  # a session records its statements, not these
            await session.execute(statement)
    assert await _state(author) == before
    with unaudited():
        async with author.transaction() as session:
            await session.execute(statement)
    assert (await _state(author))[0] == [(1, "Z")]
