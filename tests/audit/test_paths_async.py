"""Every write path on an audited model leaves an audit row or is refused: upserts (insert and
update branches), Core INSERT/UPDATE/DELETE through any session, raw SQL, delete-orphan, bulk
inserts through the recorder, and statements over more rows than one chunk.
This async file is the source of ``test_paths.py``."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

import dalkit.audit.records
import dalkit.audit.statements
from dalkit import AsyncDatabase, AsyncRepository, AsyncUnitOfWork, audit
from dalkit.audit import AuditEntry, UnauditedWriteError
from dalkit.tables import audit_log
from dalkit.testing import count_queries

from .models import Author, Comment, Counter, Gadget, Scratch, table


async def trail(db: AsyncDatabase, model: type[Any], ident: int) -> list[AuditEntry]:
    async with db.session() as session:
        return await audit.history_async(session, model, ident)


async def actions(db: AsyncDatabase, model: type[Any], ident: int) -> list[str]:
    return [entry.action for entry in await trail(db, model, ident)]


async def log_size(db: AsyncDatabase) -> int:
    async with db.session() as session:
        found = await session.execute(sa.select(sa.func.count()).select_from(audit_log))
        return int(found.scalar_one())


def upsert(db: AsyncDatabase, target: sa.Table, rows: list[dict[str, Any]]) -> Any:
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(target).values(rows)
    return statement.on_conflict_do_update(
        index_elements=[target.c.sku], set_={"name": statement.excluded.name}
    )


async def test_a_core_upsert_records_a_create_for_new_rows_and_old_new_for_updated_ones(
    async_database: AsyncDatabase,
) -> None:
    gadgets = table(Gadget)
    async with AsyncUnitOfWork(async_database, actor="import") as uow:
        await uow.session.execute(
            upsert(async_database, gadgets, [{"id": 1, "sku": "a", "name": "A"}])
        )
    async with AsyncUnitOfWork(async_database, actor="import-2") as uow:
        await uow.session.execute(
            upsert(
                async_database,
                gadgets,
                [{"id": 1, "sku": "a", "name": "A2"}, {"id": 2, "sku": "b", "name": "B"}],
            )
        )
    created, updated = await trail(async_database, Gadget, 1)
    assert (created.action, created.actor_id) == ("create", "import")
    assert created.changes == {"id": 1, "sku": "a", "name": "A", "deleted_at": None}
    assert (updated.action, updated.actor_id) == ("update", "import-2")
    assert updated.changes == {"name": {"old": "A", "new": "A2"}}
    assert await actions(async_database, Gadget, 2) == ["create"]


async def test_an_upsert_that_changes_its_conflict_key_records_the_update(
    async_database: AsyncDatabase,
) -> None:
    gadgets = table(Gadget)
    async with AsyncUnitOfWork(async_database) as uow:
        await uow.session.execute(
            upsert(async_database, gadgets, [{"id": 1, "sku": "a", "name": "A"}])
        )
    insert = (
        postgresql.insert if async_database.engine.dialect.name == "postgresql" else sqlite.insert
    )
    statement = insert(gadgets).values(id=2, sku="a", name="A2")
    async with AsyncUnitOfWork(async_database, actor="sku-fix") as uow:
        await uow.session.execute(  # the row found by sku "a" is no longer found by it
            statement.on_conflict_do_update(
                index_elements=[gadgets.c.sku], set_={"sku": "a-1", "name": statement.excluded.name}
            )
        )
    (_, updated) = await trail(async_database, Gadget, 1)
    assert (updated.action, updated.actor_id) == ("update", "sku-fix")
    assert updated.changes == {"sku": {"old": "a", "new": "a-1"}, "name": {"old": "A", "new": "A2"}}
    assert await actions(async_database, Gadget, 2) == []
    with pytest.raises(
        UnauditedWriteError, match="DO UPDATE sets the primary key of audit_gadgets"
    ):
        async with AsyncUnitOfWork(async_database, actor="mallory") as uow:
            await uow.session.execute(
                insert(gadgets)
                .values(id=3, sku="a-1", name="B")
                .on_conflict_do_update(index_elements=[gadgets.c.sku], set_={"id": 9})
            )
    assert await async_database.sql("SELECT id, sku FROM audit_gadgets") == [
        {"id": 1, "sku": "a-1"}
    ]


async def test_an_orm_upsert_with_returning_is_recorded_and_still_returns_its_entity(
    async_database: AsyncDatabase,
) -> None:
    insert = (
        postgresql.insert if async_database.engine.dialect.name == "postgresql" else sqlite.insert
    )
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add(Gadget(id=5, sku="e", name="E"))
    async with AsyncUnitOfWork(async_database, actor="sync") as uow:
        statement = insert(Gadget).values(id=5, sku="e", name="E!")
        returning = statement.on_conflict_do_update(
            index_elements=[Gadget.sku], set_={"name": statement.excluded.name}
        ).returning(Gadget)
        result = await uow.session.execute(returning, execution_options={"populate_existing": True})
        assert result.scalar_one().name == "E!"
    (_, updated) = await trail(async_database, Gadget, 5)
    assert (updated.action, updated.changes) == ("update", {"name": {"old": "E", "new": "E!"}})


async def test_core_insert_update_and_delete_through_a_session_are_recorded(
    async_database: AsyncDatabase,
) -> None:
    authors = table(Author)
    async with AsyncUnitOfWork(async_database, actor="core") as uow:
        await uow.session.execute(sa.insert(authors).values(email="a@x", name="A"))
        await uow.session.execute(
            sa.insert(authors),
            [{"id": 7, "email": "b@x", "name": "B"}, {"id": 8, "email": "c@x", "name": "C"}],
        )
    async with AsyncUnitOfWork(async_database, actor="core") as uow:
        await uow.session.execute(sa.update(authors).where(authors.c.id == 7).values(name="B2"))
        await uow.session.execute(sa.delete(authors).where(authors.c.id == 8))
    created = (await trail(async_database, Author, 1))[0]
    assert (created.action, created.changes["email"]) == ("create", "a@x")
    first, second = await trail(async_database, Author, 7)
    assert first.action == "create"
    assert second.changes == {"name": {"old": "B", "new": "B2"}}
    assert await actions(async_database, Author, 8) == ["create", "delete"]
    assert (await trail(async_database, Author, 8))[-1].changes["name"] == "C"


async def test_core_statements_run_with_many_parameter_sets_are_recorded(
    async_database: AsyncDatabase,
) -> None:
    counters = table(Counter)
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add_all([Counter(id=n, n=n) for n in range(1, 5)])
    by_id = counters.c.id == sa.bindparam("ident")
    async with AsyncUnitOfWork(async_database, actor="many") as uow:
        changed = sa.update(counters).where(by_id).values(n=sa.bindparam("to"))
        await uow.session.execute(changed, [{"ident": 1, "to": 10}, {"ident": 2, "to": 20}])
        await uow.session.execute(sa.delete(counters).where(by_id), [{"ident": 3}, {"ident": 9}])
    assert (await trail(async_database, Counter, 1))[-1].changes == {"n": {"old": 1, "new": 10}}
    assert (await trail(async_database, Counter, 2))[-1].changes == {"n": {"old": 2, "new": 20}}
    assert await actions(async_database, Counter, 3) == ["create", "delete"]
    assert await actions(async_database, Counter, 4) == ["create"]
    left = await async_database.sql("SELECT id, n FROM audit_counters ORDER BY id")
    assert left == [{"id": 1, "n": 10}, {"id": 2, "n": 20}, {"id": 4, "n": 4}]


async def test_a_plain_sqlalchemy_session_is_covered_too(async_database: AsyncDatabase) -> None:
    async with AsyncSession(async_database.engine) as session:
        await session.execute(sa.insert(table(Author)).values(id=3, email="p@x", name="P"))
        await session.execute(sa.update(Author).where(Author.id == 3).values(name="Q"))
        await session.commit()
    assert await actions(async_database, Author, 3) == ["create", "update"]


async def test_an_insert_whose_rows_cannot_be_found_again_is_refused_and_writes_nothing(
    async_database: AsyncDatabase,
) -> None:
    with pytest.raises(UnauditedWriteError, match="without their primary or unique key"):
        async with AsyncUnitOfWork(async_database) as uow:
            await uow.session.execute(
                sa.insert(table(Comment)), [{"author_id": 1, "body": "x"}] * 2
            )
    async with async_database.session() as session:
        found = await session.execute(sa.select(sa.func.count()).select_from(table(Comment)))
        assert found.scalar_one() == 0


async def test_raw_sql_writing_an_audited_table_is_refused_and_other_raw_sql_runs(
    async_database: AsyncDatabase,
) -> None:
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add(Author(id=1, email="a@x", name="A"))
    for sql in (
        "DELETE FROM audit_authors",
        "UPDATE audit_authors SET name = 'x' WHERE id = 1",
        "INSERT INTO audit_authors (id, email, name) VALUES (2, 'b@x', 'B')",
        'WITH gone AS (DELETE FROM "audit_authors" RETURNING id) SELECT count(*) FROM gone',
    ):
        with pytest.raises(UnauditedWriteError, match="audit_authors"):
            await async_database.sql(sql)
    assert await async_database.sql("SELECT name FROM audit_authors") == [{"name": "A"}]
    await async_database.sql("INSERT INTO audit_scratch (id, text) VALUES (1, 'ok')")
    async with async_database.session() as session:
        assert (await session.get(Scratch, 1)) is not None
        assert (await session.get(Author, 1)) is not None


async def test_a_do_block_writing_an_audited_table_is_refused(
    async_database: AsyncDatabase,
) -> None:
    if async_database.engine.dialect.name != "postgresql":
        pytest.skip("DO blocks are PostgreSQL's")
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add(Author(id=1, email="a@x", name="A"))
    for sql in (
        "DO $$ BEGIN UPDATE audit_authors SET name = 'x' WHERE id = 1; END $$",
        "DO LANGUAGE plpgsql $body$ BEGIN DELETE FROM public.audit_authors; END $body$",
    ):
        with pytest.raises(UnauditedWriteError, match="audit_authors"):
            await async_database.sql(sql)
    await async_database.sql("DO $$ BEGIN UPDATE audit_scratch SET text = 'x'; END $$")
    assert await async_database.sql("SELECT name FROM audit_authors") == [{"name": "A"}]
    assert await actions(async_database, Author, 1) == ["create"]


@pytest.mark.parametrize(
    "statement",
    [
        sa.update(Author).where(Author.id == 1).values(id=2, name="B"),
        sa.update(table(Author)).where(table(Author).c.id == 1).values(id=table(Author).c.id + 1),
        sa.update(Author).where(Author.id == 1).ordered_values((Author.id, 2)),
    ],
    ids=["orm", "core", "ordered"],
)
async def test_an_update_statement_that_changes_a_primary_key_is_refused(
    async_database: AsyncDatabase, statement: sa.Update
) -> None:
    # its rows are found again by their keys: a changed key would go unrecorded
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add(Author(id=1, email="a@x", name="A"))
    with pytest.raises(UnauditedWriteError, match="sets the primary key of audit_authors"):
        async with AsyncUnitOfWork(async_database, actor="mallory") as uow:
            await uow.session.execute(statement)
    assert await async_database.sql("SELECT id, name FROM audit_authors") == [
        {"id": 1, "name": "A"}
    ]
    async with AsyncUnitOfWork(async_database, actor="orm") as uow:  # the ORM records it
        author = await uow.session.get(Author, 1)
        assert author is not None
        author.id = 2
    (_, moved) = await trail(async_database, Author, 1)  # recorded under the key it had
    assert moved.changes == {"id": {"old": 1, "new": 2}}


async def _author_with_comments(async_database: AsyncDatabase) -> int:
    """The id of a new author with the comments "one" and "two"."""
    async with AsyncUnitOfWork(async_database) as uow:
        author = Author(email="a@x", name="A", comments=[Comment(body="one"), Comment(body="two")])
        uow.session.add(author)
    return author.id


async def _with_comments(uow: AsyncUnitOfWork, author_id: int) -> Author:
    loaded = await uow.session.get(Author, author_id)
    assert loaded is not None
    await uow.session.refresh(loaded, ["comments"])
    return loaded


async def test_removing_a_child_of_a_delete_orphan_relationship_records_its_delete(
    async_database: AsyncDatabase,
) -> None:
    author_id = await _author_with_comments(async_database)
    async with AsyncUnitOfWork(async_database, actor="mod") as uow:
        loaded = await _with_comments(uow, author_id)  # held: the session keeps it weakly
        loaded.comments.clear()
    for comment_id, body in ((1, "one"), (2, "two")):
        entries = await trail(async_database, Comment, comment_id)
        assert [e.action for e in entries] == ["create", "delete"]
        assert (entries[-1].changes["body"], entries[-1].actor_id) == (body, "mod")
    async with async_database.session() as session:
        found = await session.execute(sa.select(sa.func.count()).select_from(table(Comment)))
        assert found.scalar_one() == 0


async def test_editing_children_of_a_delete_orphan_relationship_that_stay_records_updates(
    async_database: AsyncDatabase,
) -> None:
    author_id = await _author_with_comments(async_database)
    async with AsyncUnitOfWork(async_database, actor="ed") as uow:
        loaded = await _with_comments(uow, author_id)
        loaded.name = "B"
        loaded.comments[0].body = "first"
        alone = await uow.session.get(Comment, 2)
        assert alone is not None
        alone.body = "second"
    assert await actions(async_database, Author, author_id) == ["create", "update"]
    for comment_id, old, new in ((1, "one", "first"), (2, "two", "second")):
        entries = await trail(async_database, Comment, comment_id)
        assert [e.action for e in entries] == ["create", "update"]
        assert entries[-1].changes == {"body": {"old": old, "new": new}}


async def test_the_bulk_insert_recorder_logs_each_row_a_chunk_writes(
    async_database: AsyncDatabase,
) -> None:
    rows = [{"email": f"{n}@x", "name": f"n{n}"} for n in range(3)]
    recorder = audit.bulk_insert_audit(Author, rows[0])  # found again by the unique email
    async with AsyncUnitOfWork(async_database, actor="loader") as uow:
        connection = await uow.session.connection()  # the driver path: no session event
        async with audit.recording_bulk_insert_async(uow.session, recorder, rows):
            await connection.execute(sa.insert(table(Author)), rows)
    entries = [await trail(async_database, Author, ident) for ident in (1, 2, 3)]
    assert [[e.action for e in found] for found in entries] == [["create"]] * 3
    assert {found[0].changes["email"] for found in entries} == {"0@x", "1@x", "2@x"}
    assert entries[0][0].actor_id == "loader"


async def test_a_bulk_insert_without_keys_of_an_audited_model_is_refused_up_front() -> None:
    with pytest.raises(UnauditedWriteError, match="primary key or a unique key"):
        audit.bulk_insert_audit(Comment, {"author_id": 1, "body": "x"})
    assert audit.bulk_insert_audit(Scratch, {"text": "x"}) is None


@pytest.mark.parametrize("deleting", [False, True], ids=["update", "delete"])
async def test_a_statement_over_many_rows_reads_its_before_image_in_chunks(
    async_database: AsyncDatabase, monkeypatch: pytest.MonkeyPatch, deleting: bool
) -> None:
    monkeypatch.setattr(dalkit.audit.statements, "IN_CHUNK", 4)
    monkeypatch.setattr(dalkit.audit.records, "IN_CHUNK", 4)
    async with AsyncUnitOfWork(async_database) as uow:
        uow.session.add_all([Counter(id=n, n=n) for n in range(1, 26)])
    statement = sa.delete(Counter) if deleting else sa.update(Counter).values(n=Counter.n + 100)
    with count_queries(async_database) as counter:
        async with AsyncUnitOfWork(async_database, actor="sweep") as uow:
            await uow.session.execute(statement)
    for ident in range(1, 26):
        last = (await trail(async_database, Counter, ident))[-1]
        if deleting:
            assert (last.action, last.changes) == ("delete", {"id": ident, "n": ident})
        else:
            assert last.changes == {"n": {"old": ident, "new": ident + 100}}
        assert last.actor_id == "sweep"
    reads = [s for s in counter.statements if s.lstrip().upper().startswith("SELECT")]
    unbounded = [s for s in reads if "LIMIT" not in s.upper() and " IN " not in s.upper()]
    assert unbounded == []  # no read of every row at once
    assert await log_size(async_database) == 50


class Counters(AsyncRepository[Counter]):
    pass


async def test_a_bulk_insert_coerced_after_its_first_chunks_were_copied_logs_each_row_once(
    async_database: AsyncDatabase,
) -> None:
    # through psycopg the types are checked as the COPY ends, and a load with a value to coerce
    # is redone: what its first attempt wrote and logged must be gone
    rows: list[dict[str, Any]] = [{"id": n, "n": n} for n in range(1, 6)]
    rows[-1]["n"] = "5"  # coerced to 5, as add() would
    async with AsyncUnitOfWork(async_database, actor="loader") as uow:
        assert await Counters(uow.session).bulk_insert(rows, chunk_size=2) == 5
    assert [await actions(async_database, Counter, n) for n in range(1, 6)] == [["create"]] * 5
    assert await log_size(async_database) == 5
    async with async_database.session() as session:
        query = sa.select(Counter.id, Counter.n).order_by(Counter.id)
        stored = (await session.execute(query)).all()
    assert [tuple(row) for row in stored] == [(n, n) for n in range(1, 6)]
