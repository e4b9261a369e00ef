"""Reads the cache must leave to the database, found from outside: a session's unflushed
changes (a served entity would be merged over them), a snapshot level however it was asked for
(the server's default, ``SET TRANSACTION`` in SQL), a bound value whose only text is its memory
address, and a memoized function's result read in a SQLite snapshot older than the tokens
(SQLite and PostgreSQL; memory and Redis; sync, the async read path is shared)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import selectinload

from dalkit import Database
from dalkit.cache import MemoryBackend, QueryCache, install

from .models import Author, Book


def test_a_hit_never_overwrites_the_session_s_unflushed_changes(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Author).options(selectinload(Author.books))
    with db.transaction() as session:
        cache.cached(session, statement).scalars().all()  # stored
    with db.transaction() as session:
        ann = session.get(Author, 1)
        assert ann is not None
        with session.no_autoflush:
            ann.name = "Changed"
            served = cache.cached(session, statement).scalars().all()
            assert served == [ann]
            assert ann.name == "Changed"
            assert ann in session.dirty
    with db.transaction() as session:
        assert session.scalar(sa.select(Author.name).where(Author.id == 1)) == "Changed"


class Code:
    """A value object with no repr of its own: its text is its memory address."""

    def __init__(self, text: str) -> None:
        self.text = text


class CodeType(sa.types.TypeDecorator[Code]):
    impl = sa.String(50)
    cache_ok = True

    def process_bind_param(self, value: Code | None, dialect: Any) -> str | None:
        return None if value is None else value.text


def test_a_bound_value_keyed_only_by_its_address_is_never_cached(
    db: Database, cache: QueryCache
) -> None:
    # a later value born at the same address would be served this one's rows
    def titled(text: str) -> list[int]:
        code = sa.bindparam("code", Code(text), type_=CodeType())
        with db.transaction() as session:
            statement = sa.select(Book.id).where(Book.title == code)
            return list(cache.cached(session, statement).scalars().all())

    for _ in range(20):
        assert (titled("a"), titled("b")) == ([1], [2])
    stats = cache.get_stats()
    assert (stats["hits"], stats["sets"], stats["bypasses"]) == (0, 0, 40)


def _postgres_only(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's isolation settings")


def _rename_elsewhere(db: Database, name: str) -> None:
    done = threading.Event()

    def rename() -> None:  # another thread: its own transaction and connection
        with db.transaction() as session:
            session.execute(sa.update(Author).where(Author.id == 1).values(name=name))
        done.set()

    threading.Thread(target=rename).start()
    assert done.wait(10)


def test_a_server_default_snapshot_level_is_bypassed_like_an_explicit_one(
    db: Database, cache: QueryCache
) -> None:
    _postgres_only(db)
    url = make_url(db.engine.url.render_as_string(hide_password=False))
    options = "-c default_transaction_isolation=repeatable\\ read"
    snapshot_db = Database(url, connect_args={"options": options})
    snapshot_cache = install(snapshot_db, QueryCache(MemoryBackend()))
    names = sa.select(Author.name).where(Author.id == 1)
    try:
        with snapshot_db.transaction() as session:
            assert session.scalar(sa.text("SHOW transaction_isolation")) == "repeatable read"
            session.execute(sa.select(Book.id))  # the snapshot: the first query's
            _rename_elsewhere(snapshot_db, "Renamed")
            # the transaction's snapshot predates the rename: it must not become the entry
            assert snapshot_cache.cached(session, names).scalar_one() == "Ann"
        with snapshot_db.transaction() as session:
            assert snapshot_cache.cached(session, names).scalar_one() == "Renamed"
        stats = snapshot_cache.get_stats()
        assert (stats["sets"], stats["bypasses"]) == (0, 2)
    finally:
        snapshot_db.dispose()


@pytest.mark.parametrize(
    "setting",
    [
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        "SET LOCAL transaction_isolation = 'repeatable read'",
    ],
)
def test_a_snapshot_level_set_in_sql_is_bypassed_for_the_rest_of_its_transaction(
    db: Database, cache: QueryCache, setting: str
) -> None:
    _postgres_only(db)
    names = sa.select(Author.name).where(Author.id == 1)
    with db.transaction() as session:
        session.execute(sa.text(setting))
        assert session.scalar(sa.text("SHOW transaction_isolation")) != "read committed"
        session.execute(sa.select(Book.id))  # the snapshot: the first query's
        _rename_elsewhere(db, f"Renamed {uuid.uuid4().hex[:6]}")
        assert cache.cached(session, names).scalar_one() == "Ann"  # its snapshot's
    with db.transaction() as session:  # a new transaction at the default level: cached
        renamed = cache.cached(session, names).scalar_one()
        assert renamed.startswith("Renamed")
        assert cache.cached(session, names).scalar_one() == renamed
    stats = cache.get_stats()
    assert (stats["bypasses"], stats["sets"], stats["hits"]) == (1, 1, 1)


def test_memoize_never_stores_a_result_read_in_a_sqlite_snapshot_older_than_its_tokens(
    db: Database, cache: QueryCache
) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite keeps the snapshot of a transaction's first read")

    @cache.memoize(tables=[Book])
    def count_books() -> int:
        with db.transaction(read_only=True) as session:  # joins the caller's transaction
            return int(session.scalar(sa.select(sa.func.count()).select_from(Book)) or 0)

    with db.transaction(read_only=True) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Author)) == 1  # snapshot
        done = threading.Event()

        def add_book() -> None:
            with db.transaction() as other:
                other.add(Book(id=3, title="c"))
            done.set()

        threading.Thread(target=add_book).start()
        assert done.wait(10)
        assert count_books() == 2  # what its snapshot holds
    assert count_books() == 3  # not the older snapshot's count, stored under new tokens
