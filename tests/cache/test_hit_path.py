"""What a hit skips: the digest of a key read again is remembered (the same key as hashing
it gives), and whether a result may be stored is decided on a miss only, where it is the same
decision as before the lookup."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import Database, Repository
from dalkit.cache import QueryCache
from dalkit.cache.keys import KeyBuilder

from .models import Book


class _Books(Repository[Book]):
    cache_ttl = 60


def _hashed(builder: KeyBuilder, statement: Any, params: dict[str, Any]) -> str:
    """The key as hashing its material gives it (what every read did before the memo)."""
    shape, values = builder._known[statement]
    written = repr([*values, sorted(params.items())])
    digest = hashlib.blake2b(f"{shape}\x00{written}".encode(), digest_size=20).hexdigest()
    return f"{builder._namespace}:e:{digest}"


@pytest.mark.parametrize("cache_kind", ["memory"])
def test_a_key_read_again_is_remembered_and_is_the_hashed_key(
    db: Database, cache: QueryCache
) -> None:
    builder = cache.keys
    assert builder is not None
    statement = sa.select(Book).where(Book.id == sa.bindparam("pk0"))
    first = builder.key(statement, {"pk0": 1})
    assert builder._digests  # remembered
    assert builder.key(statement, {"pk0": 1}) == first == _hashed(builder, statement, {"pk0": 1})
    assert builder.key(statement, {"pk0": 2}) == _hashed(builder, statement, {"pk0": 2}) != first
    held = len(builder._digests)
    long = {"pk0": "x" * 600}  # not remembered: the memo stays small
    assert builder.key(statement, long) == _hashed(builder, statement, long)
    assert len(builder._digests) == held


@pytest.mark.parametrize("cache_kind", ["memory"])
def test_a_hit_does_not_decide_whether_to_store_and_a_miss_still_does(
    db: Database, cache: QueryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []
    may_store = cache.may_store

    def counted(session: Any) -> bool:
        decided = may_store(session)
        asked.append(decided)
        return decided

    monkeypatch.setattr(cache, "may_store", counted)
    with db.transaction() as session:
        assert _Books(session).get(1) is not None  # a miss: stored
    assert len(asked) == 1
    with db.transaction() as session:
        assert _Books(session).get(1) is not None  # a hit
    assert len(asked) == 1
    with db.transaction() as session:
        session.autoflush = False
        session.add(Book(id=3, title="pending"))  # unflushed: a result may carry it
        assert len(_Books(session).list(sort="id")) == 2  # a miss, not stored
        session.expunge_all()
    assert asked[1:] == [False]
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 2, 1)
