"""Results of plain entities are kept as column values and rebuilt in the reading session:
persistent, unchanged, held instances reused, the ``load`` event fired; other results keep
the pickled form; an entry written for other columns of the model is read as a miss."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column

from dalkit import Database
from dalkit.cache import QueryCache
from dalkit.cache.rows import MARK, EntityRows, decode_rows, encode_rows, entity_rows

from .models import Animal, Book, Dog


class _NoteBase(DeclarativeBase):
    pass


class Note(_NoteBase):
    __tablename__ = "cache_note"
    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


def _stored(cache: QueryCache, statement: Any) -> Any:
    """What the backend holds for ``statement``: the payload after the entry's header."""
    key = cache.key_of(statement, None)
    backend: Any = cache.backend
    if not cache.shared:
        return backend._entries[key][1]
    raw = backend._links.current().client.get(key)
    return raw.split(b"\n", 1)[1]


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements ``db`` sends from now on."""
    sent: list[str] = []

    def note(*args: Any) -> None:
        sent.append(args[2])

    sa.event.listen(db.engine, "before_cursor_execute", note)
    yield sent
    sa.event.remove(db.engine, "before_cursor_execute", note)


def test_plain_entities_are_stored_as_column_values_and_served_persistent(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).order_by(Book.id)
    with db.transaction() as session:
        cache.cached(session, statement)
    stored = _stored(cache, statement)
    assert isinstance(stored, EntityRows) or stored[:1] == MARK
    with db.transaction() as session:
        books = cache.cached(session, statement).scalars().all()
        assert [book.title for book in books] == ["a", "b"]
        for book in books:
            state = sa.inspect(book)
            assert state.persistent
            assert not state.modified
            assert session.get(Book, book.id) is book
            assert "author" not in state.dict  # relationships load lazily, as after a query
        books[0].title = "changed"
    with db.transaction() as session:
        assert session.get(Book, 1).title == "changed"  # type: ignore[union-attr]
    assert cache.get_stats()["hits"] == 1


def test_a_held_entity_with_expired_columns_is_filled_in_from_the_entry(
    db: Database, cache: QueryCache, statements: list[str]
) -> None:
    statement = sa.select(Book).where(Book.id == 1)
    with db.transaction() as session:
        cache.cached(session, statement)
    with db.transaction() as session:
        held = session.get(Book, 1)
        session.expire(held, ["title"])
        sent = len(statements)
        served = cache.cached(session, statement).scalar_one()
        assert served is held
        assert not sa.inspect(held).expired_attributes
        assert held is not None
        assert held.title == "a"
        assert len(statements) == sent  # no refresh query
    assert cache.get_stats()["hits"] == 1


def test_a_held_entity_gets_the_entry_s_values_and_keeps_changes_not_flushed(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).order_by(Book.id)
    with db.transaction() as session:
        cache.cached(session, statement)
    with db.transaction() as session:
        first, second = session.get(Book, 1), session.get(Book, 2)
        assert first is not None
        assert second is not None
        # stale values in the session, as a replica read before a write leaves them
        sa.orm.attributes.set_committed_value(first, "title", "old")
        session.autoflush = False
        second.title = "mine"
        served = cache.cached(session, statement).scalars().all()
        assert served == [first, second]
        assert first.title == "a"
        assert not sa.inspect(first).modified
        assert second.title == "mine"
        assert sa.inspect(second).modified
        session.autoflush = True
    with db.transaction() as session:
        assert session.get(Book, 2).title == "mine"  # type: ignore[union-attr]


def test_served_entities_fire_the_load_event(db: Database, cache: QueryCache) -> None:
    statement = sa.select(Book).order_by(Book.id)
    loaded: list[Any] = []

    def on_load(target: Any, _context: Any) -> None:
        loaded.append(target)

    with db.transaction() as session:
        cache.cached(session, statement)
    sa.event.listen(Book, "load", on_load)
    try:
        with db.transaction() as session:
            books = cache.cached(session, statement).scalars().all()
    finally:
        sa.event.remove(Book, "load", on_load)
    assert loaded == books
    assert cache.get_stats()["hits"] == 1


def test_other_results_keep_the_pickled_form(db: Database, cache: QueryCache) -> None:
    with db.transaction() as session:
        session.add(Dog(id=1, name="rex", tricks=2))
    polymorphic = sa.select(Animal)
    deferred = sa.select(Book).options(defer(Book.title)).order_by(Book.id)
    for _ in range(2):
        with db.transaction() as session:  # one read a transaction: SQLite stores only those
            animals = cache.cached(session, polymorphic).scalars().all()
            assert [type(animal) for animal in animals] == [Dog]
        with db.transaction() as session:
            books = cache.cached(session, deferred).scalars().all()
            assert [book.title for book in books] == ["a", "b"]  # loaded when asked
    for statement in (polymorphic, deferred):
        stored = _stored(cache, statement)
        assert not isinstance(stored, EntityRows)
        assert not isinstance(stored, bytes) or stored[:1] != MARK
    assert cache.get_stats()["hits"] == 2


def test_a_value_changed_in_place_never_reaches_the_cache(db: Database, cache: QueryCache) -> None:
    db.create_all(_NoteBase.metadata)
    with db.transaction() as session:
        session.add(Note(id=1, data={"n": 1}))
    statement = sa.select(Note)
    with db.transaction() as session:
        cache.cached(session, statement).scalar_one().data["n"] = 2  # not tracked, not flushed
    for _ in range(2):
        with db.transaction() as session:
            note = cache.cached(session, statement).scalar_one()
            assert note.data == {"n": 1}
            note.data["n"] = 3
    assert cache.get_stats()["hits"] == 2


@pytest.mark.parametrize("cache_kind", ["redis"])  # entries of another process: shared ones
def test_an_entry_written_for_other_columns_of_the_model_is_a_miss(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).order_by(Book.id)
    with Session(db.engine) as session:
        rows = entity_rows(session.execute(statement).freeze())
    assert rows is not None
    other = dataclasses.replace(rows.shape, keys=(*rows.shape.keys[:-1], "renamed"))
    payload = encode_rows(dataclasses.replace(rows, shape=other))
    assert payload is not None
    assert decode_rows(payload) is None
    header = pickle.dumps((rows.template, "not a mapped class", rows.shape.keys))
    unknown = MARK + len(header).to_bytes(4, "big") + header + pickle.dumps(rows.rows)
    assert decode_rows(unknown) is None
    key, tables = cache.describe(statement, None, None)
    _payload, tokens = cache.backend.fetch(key, cache.token_names(tables))
    cache.backend.store(key, tokens, payload, 60)
    with db.transaction() as session:
        books = cache.cached(session, statement).scalars().all()
        assert [book.title for book in books] == ["a", "b"]
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"]) == (0, 1)
    with db.transaction() as session:  # the query's own entry replaced it
        assert len(cache.cached(session, statement).scalars().all()) == 2
    assert cache.get_stats()["hits"] == 1
