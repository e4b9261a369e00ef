"""Differential property test of the cache's guarantee: random transactions write through every
path (repository, ORM, Core, raw SQL, savepoints released or rolled back, rollbacks, ON DELETE
CASCADE), and every cached read (repository reads, a Core select, a join, a relationship load),
in the writing transaction and after it, answers as the same read made uncached (SQLite and
PostgreSQL; memory and Redis). Then on two databases sharing the cache's storage, as two
processes (or two databases of one process) do, their transactions alternating, and on
PostgreSQL each one's writes and reads happening while the other's transaction is open.
Bounded and derandomized, so CI runs the same examples."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from dalkit import AsyncDatabase, AsyncRedisManager, AsyncRepository, LockNotAvailableError
from dalkit.cache import AsyncQueryCache, AsyncRedisBackend, MemoryBackend, install

from .models import Author, Book, author_table, book_table

Draw = Callable[..., Any]
#: what another database does while a transaction is open (`steps`)
Elsewhere = Callable[[Draw, list[str]], Awaitable[None]]
# a read repeated with other values is what the test does, not an N+1 to report
pytestmark = pytest.mark.filterwarnings("ignore::dalkit.NPlusOneWarning")


class CachedBooks(AsyncRepository[Book]):
    cache_ttl = 60


class Books(AsyncRepository[Book]):
    pass


class CachedAuthors(AsyncRepository[Author]):
    cache_ttl = 60


class Authors(AsyncRepository[Author]):
    pass


class RolledBack(Exception):
    """Raised to roll a transaction or a savepoint back."""


IDS = st.integers(1, 6)
LETTERS = st.sampled_from("abc")
READS = ["get", "get_many", "list", "count", "exists", "first", "paginate", "load"]
SELECTS: dict[str, Callable[[], Any]] = {
    "core": lambda: sa.select(book_table.c.id, book_table.c.title).order_by(book_table.c.id),
    "join": lambda: (
        sa.select(author_table.c.name, book_table.c.title)
        .join_from(author_table, book_table)
        .order_by(book_table.c.title)
    ),
    "relationship": lambda: (
        sa.select(Author).options(selectinload(Author.books)).order_by(Author.id)
    ),
}


def shown(entity: Any) -> Any:
    """A book or an author with its books, as plain values."""
    if entity is None:
        return None
    if isinstance(entity, Author):
        return (entity.id, entity.name, sorted(shown(b) for b in entity.books))
    return (entity.id, entity.title, entity.author_id)


async def read_repository(kind: str, args: Any, books: Any, authors: Any) -> Any:
    """One read of ``kind`` through these repositories, as plain values."""
    ident, ids, owner, letter = args
    if kind == "get":
        return shown(await books.get_or_none(ident))
    if kind == "get_many":
        return [shown(b) for b in await books.get_many(ids)]
    if kind == "list":
        return [shown(b) for b in await books.list(author_id=owner, sort="-title")]
    if kind == "count":
        return await books.count(author_id__ne=owner)
    if kind == "exists":
        return await books.exists(title__startswith=letter)
    if kind == "first":
        return shown(await books.first(sort="title"))
    if kind == "paginate":
        page = await books.paginate(page=2, per_page=2, sort="-id")
        return [[shown(b) for b in page.items], page.total]
    return [shown(a) for a in await authors.list(load=["books"], sort="id")]


async def read_select(session: AsyncSession, cache: AsyncQueryCache | None, name: str) -> Any:
    """``SELECTS[name]``, through the cache or not, as plain values."""
    statement = SELECTS[name]()
    run = session.execute if cache is None else lambda s: cache.cached(session, s)
    result = await run(statement)
    if name == "relationship":
        return [shown(a) for a in result.scalars().all()]
    return [tuple(row) for row in result.all()]


def draw_read(draw: Draw) -> tuple[str, Any]:
    kind = draw(st.sampled_from([*READS, *SELECTS]))
    args = (draw(IDS), draw(st.lists(IDS, max_size=3)), draw(st.integers(1, 3)), draw(LETTERS))
    return kind, args


async def read_in(
    session: AsyncSession, cache: AsyncQueryCache, draw: Draw, log: list[str]
) -> None:
    """One read in a writing transaction, uncached then cached: they must agree."""
    kind, args = draw_read(draw)
    log.append(f"  read {kind} {args}")
    if kind in SELECTS:
        uncached = await read_select(session, None, kind)
        assert await read_select(session, cache, kind) == uncached
    else:
        uncached = await read_repository(kind, args, Books(session), Authors(session))
        cached = await read_repository(kind, args, CachedBooks(session), CachedAuthors(session))
        assert cached == uncached


async def read_fresh(
    db: AsyncDatabase, cache: AsyncQueryCache, draw: Draw, log: list[str], every_table: bool = False
) -> None:
    """Reads in transactions of their own, uncached then cached twice: they must agree
    (``every_table``: the authors with their books, which reads both tables)."""
    reads = [("relationship", None)] if every_table else []
    for _ in range(0 if every_table else draw(st.integers(1, 3))):
        reads.append(draw_read(draw))
    for kind, args in reads:
        log.append(f"read {kind} {args}")
        async with db.session_factory() as session:
            if kind in SELECTS:
                uncached = await read_select(session, None, kind)
            else:
                uncached = await read_repository(kind, args, Books(session), Authors(session))
        for _ in range(2):  # stored, then served
            async with db.transaction() as session:
                if kind in SELECTS:
                    assert await read_select(session, cache, kind) == uncached
                else:
                    repositories = (CachedBooks(session), CachedAuthors(session))
                    assert await read_repository(kind, args, *repositories) == uncached


async def existing(session: AsyncSession, table: sa.Table) -> list[int]:
    return list((await session.execute(sa.select(table.c.id).order_by(table.c.id))).scalars())


async def write_book(db: AsyncDatabase, session: AsyncSession, draw: Draw, log: list[str]) -> None:
    """One write of a book through a path drawn: a new book, or one that exists."""
    ids, owners = await existing(session, book_table), await existing(session, author_table)
    free = [i for i in range(1, 7) if i not in ids]
    paths = ["add", "add_many", "upsert", "bulk_insert", "orm", "core", "sql"] if free else []
    paths += [f"{p}_old" for p in ("update", "update_many", "delete", "delete_where", "upsert")]
    paths += [f"{p}_old" for p in ("bulk_update", "orm", "orm_delete", "core", "core_delete")]
    paths += ["sql_old", "sql_delete"]
    path = draw(st.sampled_from(paths if ids else paths[:7]))
    ident = draw(st.sampled_from(ids if path.endswith(("_old", "_delete")) else free))
    row = {
        "id": ident,
        "title": f"{draw(LETTERS)}{ident}",
        "author_id": draw(st.sampled_from([None, *owners])),
    }
    log.append(f"  {path} {row}")
    repo = CachedBooks(session) if draw(st.booleans()) else Books(session)
    if path == "add":
        await repo.add(Book(**row))
    elif path == "add_many":
        await repo.add_many([Book(**row)])
    elif path in ("upsert", "upsert_old"):
        await repo.upsert(row, on=["id"])
    elif path == "bulk_insert":
        await repo.bulk_insert([row])
    elif path == "orm":
        session.add(Book(**row))
    elif path == "core":
        await session.execute(sa.insert(book_table).values(**row))
    elif path == "sql":
        await db.sql("INSERT INTO cache_book VALUES (:id, :title, :author_id)", **row)
    elif path == "update_old":
        await repo.update(ident, title=row["title"], author_id=row["author_id"])
    elif path == "update_many_old":
        await repo.update_many([{"id": ident, "title": row["title"]}])
    elif path == "delete_old":
        await repo.delete(ident)
    elif path == "delete_where_old":
        await repo.delete_where(id=ident)
    elif path == "bulk_update_old":
        await repo.bulk_update([{"id": ident, "title": row["title"]}])
    elif path == "orm_old":
        entity = await session.get(Book, ident)
        assert entity is not None
        entity.title = row["title"]
    elif path == "orm_delete_old":
        await session.delete(await session.get(Book, ident))
    elif path == "core_old":
        where = book_table.c.id == ident
        await session.execute(sa.update(book_table).where(where).values(title=row["title"]))
    elif path == "core_delete_old":
        await session.execute(sa.delete(book_table).where(book_table.c.id == ident))
    elif path == "sql_old":
        await db.sql("UPDATE cache_book SET title = :t WHERE id = :id", t=row["title"], id=ident)
    else:
        await db.sql("DELETE FROM cache_book WHERE id = :id", id=ident)


async def write_author(
    db: AsyncDatabase, session: AsyncSession, draw: Draw, log: list[str], orm: bool = False
) -> None:
    """Add or rename an author (ORM, left pending), or delete one, its books going by ON
    DELETE CASCADE."""
    path = draw(st.sampled_from(["orm"] if orm else ["orm", "sql_delete", "core_delete"]))
    ident, name = draw(st.integers(1, 3)), draw(LETTERS)
    log.append(f"  author {path} {ident} {name}")
    if path == "orm":
        found = await session.get(Author, ident)
        if found is None:
            session.add(Author(id=ident, name=f"{name}{ident}"))
        else:
            found.name = f"{name}{ident}"
    elif path == "sql_delete":
        await db.sql("DELETE FROM cache_author WHERE id = :id", id=ident)
    else:
        await session.execute(sa.delete(author_table).where(author_table.c.id == ident))
    if path != "orm":
        session.expire_all()  # the rows the database deleted


async def steps(
    db: AsyncDatabase,
    cache: AsyncQueryCache,
    session: AsyncSession,
    draw: Draw,
    log: list[str],
    depth: int,
    elsewhere: Elsewhere | None = None,
) -> None:
    """Writes, reads and (``depth`` above 0) savepoints in one transaction; and ``elsewhere``
    (another database's transactions) meanwhile, then a read."""
    kinds = ["book", "author", "read", "savepoint"][: 3 + (depth > 0)]
    kinds += ["elsewhere"] if elsewhere is not None else []
    for _ in range(draw(st.integers(1, 4))):
        step = draw(st.sampled_from(kinds))
        if step == "elsewhere":
            assert elsewhere is not None
            await elsewhere(draw, log)
            await read_in(session, cache, draw, log)
        elif step == "book":
            await write_book(db, session, draw, log)
        elif step == "author":
            await write_author(db, session, draw, log)
        elif step == "read":
            await read_in(session, cache, draw, log)
        else:
            if draw(st.booleans()):  # a change pending as the savepoint begins
                await write_author(db, session, draw, log, orm=True)
            release = draw(st.booleans())
            log.append(f"  savepoint release={release}")
            try:
                async with db.transaction(propagation="nested") as inner:
                    await steps(db, cache, inner, draw, log, depth - 1, elsewhere)
                    if not release:
                        raise RolledBack
            except RolledBack:
                pass
            log.append("  savepoint end")
            await read_in(session, cache, draw, log)


async def explore(
    databases: list[tuple[AsyncDatabase, AsyncQueryCache]], draw: Draw, log: list[str]
) -> None:
    """Transactions drawn on each of ``databases`` (one, or two sharing the cache's storage),
    the other's transactions happening meanwhile; every cached read must answer as the
    uncached one, on each."""
    db, cache = databases[0]
    async with db.transaction() as session:
        await session.execute(sa.delete(book_table))
        await session.execute(sa.delete(author_table))
        session.add_all([Author(id=1, name="a1"), Author(id=2, name="a2")])
        await session.flush()
        session.add_all([Book(id=1, title="a1", author_id=1), Book(id=2, title="b2", author_id=2)])

    def pick() -> int:  # drawing nothing for one database: its examples stay as they were
        return draw(st.integers(0, len(databases) - 1)) if len(databases) > 1 else 0

    try:
        for _ in range(draw(st.integers(1, 5))):
            at = pick()
            db, cache = databases[at]
            other = [pair for pair in databases if pair[0] is not db]
            # SQLite's transactions take its one writer's lock: the other would wait for it
            concurrent = other and db.engine.dialect.name == "postgresql"
            elsewhere = meanwhile(*other[0]) if concurrent else None
            log.append(f"database {at}")
            await read_fresh(db, cache, draw, log, every_table=True)
            commit = draw(st.booleans())
            log.append(f"transaction commit={commit}")
            try:
                async with db.transaction() as session:
                    await steps(db, cache, session, draw, log, 2, elsewhere)
                    if not commit:
                        raise RolledBack
            except RolledBack:
                pass
            await read_fresh(*databases[pick()], draw, log)
        for db, cache in databases:
            await read_fresh(db, cache, draw, log, every_table=True)
    except AssertionError:
        print("\n".join(log))
        raise


def meanwhile(db: AsyncDatabase, cache: AsyncQueryCache) -> Elsewhere:
    """What ``db`` does while another database's transaction is open: a write committed
    (given up when the open transaction holds its row's lock), reads."""

    async def step(draw: Draw, log: list[str]) -> None:
        if draw(st.booleans()):
            log.append("  elsewhere: write")
            try:
                async with db.transaction() as session:
                    await session.execute(sa.text("SET LOCAL lock_timeout = '50ms'"))
                    await write_book(db, session, draw, log)
            except LockNotAvailableError:
                log.append("  elsewhere: locked")
        log.append("  elsewhere: reads")
        await read_fresh(db, cache, draw, log)

    return step


# more to explore: DALKIT_CACHE_DIFFERENTIAL_EXAMPLES=2000 pytest tests/cache/test_differential*.py
EXAMPLES = int(os.environ.get("DALKIT_CACHE_DIFFERENTIAL_EXAMPLES", "20"))
EXPLORING = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@EXPLORING
@given(data=st.data())
async def test_every_cached_read_answers_as_the_uncached_one(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache, data: st.DataObject
) -> None:
    await explore([(async_db, async_cache)], data.draw, [])


@pytest.fixture
async def other(
    async_db_url: str, async_cache: AsyncQueryCache, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[AsyncDatabase, AsyncQueryCache]]:
    """Another database on the same data, its cache on the same storage."""
    db = AsyncDatabase(async_db_url)
    backend = async_cache.backend
    if isinstance(backend, MemoryBackend):
        yield db, install(db, AsyncQueryCache(backend))
        await db.dispose()
        return
    assert isinstance(backend, AsyncRedisBackend)
    manager = AsyncRedisManager(request.getfixturevalue("redis_url"))
    shared = AsyncRedisBackend(manager, prefix=backend.prefix)
    yield db, install(db, AsyncQueryCache(shared))
    await shared.close()
    await manager.close()
    await db.dispose()


@settings(EXPLORING, max_examples=max(1, EXAMPLES // 3))
@given(data=st.data())
async def test_every_cached_read_of_two_databases_answers_as_the_uncached_one(
    async_db: AsyncDatabase,
    async_cache: AsyncQueryCache,
    other: tuple[AsyncDatabase, AsyncQueryCache],
    data: st.DataObject,
) -> None:
    await explore([(async_db, async_cache), other], data.draw, [])
