"""An entry of plain entities holds each row's identity key and values ready (`prepare`), and a
hit builds from them the very entities `persistent_entities` (the plain read's step, the slow
path) makes of the same rows: same values, same state, same place in the identity map."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import Database
from dalkit.cache import QueryCache
from dalkit.cache.rows import EntityRows, decode_rows, entity_rows, serve_entities
from dalkit.query.plain_entities import persistent_entities

from .models import Book
from .test_entity_rows import Note, _NoteBase

_STATE_ATTRIBUTES = ("key", "identity_token", "load_options", "load_path", "modified", "expired")


def _described(entity: Any, session: Session) -> tuple[Any, ...]:
    """What tells a loaded entity apart: its class, values and ORM state, in ``session``."""
    state = sa.inspect(entity)
    values = {key: value for key, value in state.dict.items() if key != "_sa_instance_state"}
    attributes = tuple(getattr(state, name) for name in _STATE_ATTRIBUTES)
    held = session.identity_map.get(state.key) is entity
    return type(entity), values, attributes, state.persistent, state.session_id, held


@pytest.mark.parametrize("cache_kind", ["memory"])
def test_a_hit_builds_from_the_entry_s_prepared_rows_what_persistent_entities_builds(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).order_by(Book.id)
    with db.transaction() as session:
        cache.cached(session, statement)
    key = cache.key_of(statement, None)
    stored: EntityRows = cache.backend._entries[key][1]
    assert stored.prepared is not None  # made once, when the entry was stored
    shape = stored.shape
    with Session(db.engine) as fast, Session(db.engine) as slow:
        served = serve_entities(fast, stored)
        built = persistent_entities(
            slow, shape.mapper, shape.keys, shape.pk, stored.rows, held=lambda *_: None
        )
        assert [_described(e, fast)[1:4] for e in served] == [
            _described(e, slow)[1:4] for e in built
        ]
        assert [_described(e, fast)[4:] for e in served] == [(fast.hash_key, True)] * 2
        assert len({sa.inspect(e).runid for e in served}) == 1  # one load, as a query's
        # the identity keys are the entry's own, not built again on the hit
        assert [sa.inspect(e).key for e in served] == [row[0] for row in stored.prepared]
        assert all(
            sa.inspect(e).key is row[0] for e, row in zip(served, stored.prepared, strict=True)
        )
        served[0].title = "changed"
        fast.commit()
    with db.transaction() as session:
        assert session.get(Book, 1).title == "changed"  # type: ignore[union-attr]


@pytest.mark.parametrize("cache_kind", ["memory"])
def test_a_row_twice_in_an_entry_is_served_as_one_entity(db: Database, cache: QueryCache) -> None:
    statement = (
        sa.select(Book)
        .join(Book.author)
        .where(Book.id == 1)
        .union_all(sa.select(Book).where(Book.id == 1))
    )
    twice = sa.select(Book).from_statement(statement)
    with db.transaction() as session:
        cache.cached(session, twice)
    stored = cache.backend._entries[cache.key_of(twice, None)][1]
    assert isinstance(stored, EntityRows)
    assert stored.prepared is not None
    assert len(stored.prepared) == 2
    for _ in range(2):
        with db.transaction() as session:
            books = cache.cached(session, twice).scalars().all()
            assert len(books) == 2
            assert books[0] is books[1] is session.get(Book, 1)
    assert cache.get_stats()["hits"] == 2


@pytest.mark.parametrize("cache_kind", ["redis"])
def test_an_entry_read_from_redis_again_is_decoded_once_unless_its_values_are_mutable(
    db: Database, cache: QueryCache
) -> None:
    db.create_all(_NoteBase.metadata)
    with db.transaction() as session:
        session.add(Note(id=1, data={"n": 1}))
    books, notes = sa.select(Book).order_by(Book.id), sa.select(Note)
    with db.transaction() as session:
        cache.cached(session, books)
    with db.transaction() as session:
        cache.cached(session, notes)
    client = cache.backend._links.current().client
    book_rows = client.get(cache.key_of(books, None)).split(b"\n", 1)[1]
    note_rows = client.get(cache.key_of(notes, None)).split(b"\n", 1)[1]
    decoded = decode_rows(book_rows)
    assert decoded is not None
    assert decoded.prepared is not None
    assert decode_rows(bytes(book_rows)) is decoded  # the same bytes, read again
    fresh = decode_rows(note_rows)
    assert fresh is not None
    assert fresh.prepared is None  # a dict a session may change in place: its own each time
    assert decode_rows(note_rows) is not fresh
    for _ in range(2):
        with db.transaction() as session:
            served = cache.cached(session, books).scalars().all()
            assert [sa.inspect(b).key for b in served] == [row[0] for row in decoded.prepared]
            assert [b.title for b in served] == ["a", "b"]
            note = cache.cached(session, notes).scalar_one()
            assert note.data == {"n": 1}
            note.data["n"] = 2  # in place: not flushed, and never seen by the next hit
    assert cache.get_stats()["hits"] == 4


def test_rows_about_to_be_encoded_for_a_shared_backend_are_not_prepared(
    db: Database, cache: QueryCache
) -> None:
    statement = sa.select(Book).order_by(Book.id)
    with Session(db.engine) as session:
        frozen = session.execute(statement).freeze()
    for_memory, for_redis = entity_rows(frozen), entity_rows(frozen, prepared=False)
    assert for_memory is not None
    assert for_redis is not None
    assert for_memory.prepared is not None
    assert for_redis.prepared is None
    assert for_redis.rows == for_memory.rows
