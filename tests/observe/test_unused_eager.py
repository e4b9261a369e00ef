"""Unused eager loads: a ``load=[...]`` relationship that nothing read is warned about when the
transaction or the detect_nplusone() block ends; one that was read, for any instance and by any
route, never is."""

from __future__ import annotations

import pickle

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm.attributes import InstrumentedAttribute

from dalkit import AsyncDatabase, Database
from dalkit.observe import NPlusOneWarning, Observer, UnusedEagerLoadWarning, install

from .models import AsyncAuthors, AsyncPosts, Author, Authors, Post, Posts


def _line_of(marker: str) -> int:
    with open(__file__) as source:
        return next(n for n, line in enumerate(source, 1) if marker in line)


def test_an_unread_eager_load_is_warned_at_the_end_of_the_transaction(
    seeded_db: Database, observer: Observer
) -> None:
    with pytest.warns(UnusedEagerLoadWarning) as warned:  # noqa: PT031 - warned at the end
        with seeded_db.session() as session:
            authors = Authors(session).list(load=["posts"])  # the unused read
            assert [a.name for a in authors][:1] == ["author 0"]
            assert warned.list == []  # nothing until the transaction ends
    (record,) = warned.list
    message = str(record.message)
    assert "Author.posts was loaded for 5 Author instances" in message
    assert f"test_unused_eager.py:{_line_of('# the unused read')}" in message
    assert 'drop "posts" from load=' in message
    assert (record.filename, record.lineno) == (__file__, _line_of("# the unused read"))
    assert issubclass(UnusedEagerLoadWarning, NPlusOneWarning)
    # warned, not raised, although the observer raises for N+1 patterns
    assert observer.nplusone.mode == "raise"


def test_reading_the_relationship_of_one_instance_is_enough(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        authors = Authors(session).list(load=["posts"])
        assert len(authors[3].posts) == 2
        posts = Posts(session).list(load={"author": "selectin"}, limit=3)
        assert inspect(posts[-1]).attrs.author.value.name == "author 1"


def test_a_path_under_an_unread_relationship_is_warned_once_for_the_outer_one(
    seeded_db: Database, observer: Observer
) -> None:
    with pytest.warns(UnusedEagerLoadWarning) as warned, seeded_db.session() as session:
        Authors(session).list(load=["posts", "posts.author"])
    assert [str(r.message).split(" was")[0] for r in warned.list] == [
        "unused eager load: Author.posts"
    ]
    with pytest.warns(UnusedEagerLoadWarning) as warned, seeded_db.session() as session:  # noqa: PT031
        (author, *_) = Authors(session).list(load=["posts.author"])
        assert len(author.posts) == 2
    (record,) = warned.list
    assert "Post.author was loaded for 10 Post instances" in str(record.message)
    assert 'drop "posts.author" from load=' in str(record.message)
    with seeded_db.session() as session:
        (author, *_) = Authors(session).list(load=["posts.author"])
        assert author.posts[0].author is author


def test_the_end_of_a_detect_nplusone_block_reports_too(seeded_db: Database) -> None:
    observer = install(seeded_db.engine, {"nplusone": "off"})
    try:
        with seeded_db.session() as session:
            with pytest.warns(UnusedEagerLoadWarning), seeded_db.detect_nplusone("raise"):
                authors = Authors(session).list(load=["posts"])
            # reported once: reading it now, or ending the transaction, adds nothing
            assert len(authors[0].posts) == 2
    finally:
        observer.uninstall()


def test_nothing_is_watched_or_switched_when_detection_is_off(seeded_db: Database) -> None:
    observer = install(seeded_db.engine, {"nplusone": "off"})
    try:
        with seeded_db.session() as session:
            Authors(session).list(load=["posts"])
            assert type(Author.posts) is InstrumentedAttribute
    finally:
        observer.uninstall()


def test_the_attribute_is_switched_only_while_watched_and_entities_stay_picklable(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        authors = Authors(session).list(load=["posts"])
        assert type(Author.posts) is not InstrumentedAttribute
        assert isinstance(Author.posts, InstrumentedAttribute)
        copy = pickle.loads(pickle.dumps(authors[0]))
        assert [p.title for p in copy.posts] == ["post 0.0", "post 0.1"]
        _ = authors[1].posts
        assert type(Author.posts) is InstrumentedAttribute
    assert type(Post.author) is InstrumentedAttribute


async def test_async_reads_through_awaitable_attrs_count_as_reads(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    async with seeded_async_db.session() as session:
        authors = await AsyncAuthors(session).list(load=["posts"])
        assert len(await authors[2].awaitable_attrs.posts) == 2
        posts = await AsyncPosts(session).list(load=["author"])
        assert {p.author.name for p in posts} >= {"author 0"}


async def test_an_unread_async_eager_load_is_warned_with_the_awaiting_line(
    seeded_async_db: AsyncDatabase, async_observer: Observer
) -> None:
    with pytest.warns(UnusedEagerLoadWarning) as warned:
        async with seeded_async_db.session() as session:
            await AsyncPosts(session).list(load=["author"], limit=4)  # the async unused read
    (record,) = warned.list
    assert "Post.author was loaded for 4 Post instances" in str(record.message)
    assert (record.filename, record.lineno) == (__file__, _line_of("# the async unused read"))


def test_two_reads_of_the_same_rows_are_both_satisfied_by_one_read(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        first = Authors(session).list(load=["posts"])
        again = Authors(session).list(load=["posts"], limit=2)
        assert again[1] is first[1]  # the identity map's instance, in both reads
        assert type(Author.posts) is not InstrumentedAttribute
        assert len(again[1].posts) == 2
    assert type(Author.posts) is InstrumentedAttribute


def test_a_path_through_empty_collections_watches_nothing_below_them(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        session.add(Author(name="no posts yet"))
    with seeded_db.session() as session:
        (lonely,) = Authors(session).list(load=["posts.author"], name="no posts yet")
        assert lonely.posts == []
    assert type(Post.author) is InstrumentedAttribute


def test_a_savepoint_released_early_does_not_report_and_a_rollback_never_does(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        with session.begin_nested():
            authors = Authors(session).list(load=["posts"])
        assert len(authors[0].posts) == 2  # read after the savepoint, before the commit
    with pytest.raises(ZeroDivisionError), seeded_db.session() as session:
        Authors(session).list(load=["posts"])
        _ = 1 / 0  # the code stopped before it could read what it loaded: no warning
    with pytest.raises(ZeroDivisionError), seeded_db.detect_nplusone("raise"):
        with seeded_db.session() as session:
            Authors(session).list(load=["posts"])
            _ = 1 / 0
    assert type(Author.posts) is InstrumentedAttribute


def test_a_transaction_without_eager_loads_still_ends_by_closing_while_detection_is_on(
    seeded_db: Database, observer: Observer
) -> None:
    with pytest.warns(UnusedEagerLoadWarning):  # noqa: PT031 - warned at the end
        with seeded_db.transaction() as session:
            Authors(session).list(load=["posts"])  # watched: this session reports at commit
            assert session.dispatch.after_commit
    with seeded_db.transaction() as session:
        assert Authors(session).list(sort="id")[0].name == "author 0"
        # no commit listener of the watch on this one: a read-only transaction on PostgreSQL
        # may end by closing (dalkit.transaction.deferred.nothing_to_commit)
        assert not session.dispatch.after_commit
