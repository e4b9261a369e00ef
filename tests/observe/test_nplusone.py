"""N+1 detection under the sync API: lazy loads from one result, repeated statement shapes."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from dalkit import Database
from dalkit.observe import NPlusOneError, NPlusOneWarning, Observer, install
from dalkit.repository.reads import IN_CHUNK

from .models import Author, Authors, Post, Posts


def _line_of(marker: str) -> int:
    with open(__file__) as source:
        return next(n for n, line in enumerate(source, 1) if marker in line)


def test_a_lazy_load_in_a_loop_is_caught_with_the_test_line(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session, pytest.raises(NPlusOneError) as caught:
        for post in Posts(session).list():
            _ = post.author.name  # the N+1 line
    message = str(caught.value)
    assert "Post.author lazily loaded for 2 Post instances of one query result" in message
    assert f"test_nplusone.py:{_line_of('# the N+1 line')}" in message
    assert 'load=["author"]' in message
    assert "selectinload(Post.author)" in message
    assert observer.nplusone.detections == 1


def _count_posts(authors: list[Author]) -> int:
    return sum(len(author.posts) for author in authors)  # the warned line


def test_warn_mode_warns_at_the_application_line(seeded_db: Database) -> None:
    observer = install(seeded_db.engine, {"nplusone": "warn"})
    try:
        with seeded_db.session() as session, pytest.warns(NPlusOneWarning) as warned:
            _count_posts(Authors(session).list())
        (record,) = warned.list
        assert record.filename == __file__
        assert record.lineno == _line_of("# the warned line")
        assert "Author.posts lazily loaded" in str(record.message)
    finally:
        observer.uninstall()


def test_eager_loads_are_never_caught(seeded_db: Database, observer: Observer) -> None:
    with seeded_db.session() as session:
        for post in Posts(session).list(load=["author"]):
            _ = post.author.name
        for author in Authors(session).list(load=["posts"]):
            _ = [p.title for p in author.posts]
        for author in session.scalars(sa.select(Author).options(selectinload(Author.posts))):
            _ = [p.title for p in author.posts]
    assert observer.nplusone.detections == 0


def test_one_lazy_load_per_result_is_not_an_n_plus_one(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        for ident in (1, 2, 3):
            _ = Authors(session).get(ident).posts
    assert observer.nplusone.detections == 0


def test_a_loop_of_gets_is_caught_by_its_statement_shape(
    seeded_db: Database, observer: Observer
) -> None:
    with seeded_db.session() as session:
        posts = Posts(session)
        with pytest.raises(NPlusOneError, match="ran 10 times in one transaction") as caught:
            for ident in range(1, 51):
                session.expunge_all()  # the identity map would otherwise answer repeats
                posts.get_or_none(ident)  # the get line
    assert f"test_nplusone.py:{_line_of('# the get line')}" in str(caught.value)
    assert "on Post" in str(caught.value)
    assert "get_many" in str(caught.value)


def test_a_loop_of_reads_with_a_leading_hint_comment_is_caught(
    seeded_db: Database, observer: Observer
) -> None:
    # a planner hint (pg_hint_plan's /*+ ... */) or a tracing comment before the SELECT made
    # its shape's operation OTHER, which is never counted
    hinted = sa.text(
        "/*+ IndexScan(obs_posts) token=hunter2 */ SELECT * FROM obs_posts WHERE id = :i"
    )
    with seeded_db.session() as session:
        with pytest.raises(NPlusOneError, match="ran 10 times in one transaction") as caught:
            for ident in range(1, 51):
                session.scalars(sa.select(Post).from_statement(hinted), {"i": ident}).all()
    assert "hunter2" not in str(caught.value)
    assert "SELECT * FROM obs_posts WHERE id = ?" in str(caught.value)


def test_get_many_of_many_chunks_is_one_read(seeded_db: Database, observer: Observer) -> None:
    # ten full chunks of IN_CHUNK keys: ten runs of one statement, sent by one call
    with seeded_db.session() as session:
        found = Posts(session).get_many(range(1, 10 * IN_CHUNK + 1))
        changed = Posts(session).update_many(
            [{"id": n, "title": f"t{n}"} for n in range(1, 10 * IN_CHUNK + 1)]
        )
    assert (len(found), changed) == (10, 10)
    with seeded_db.session() as session:  # the rule still holds for a loop of them
        posts = Posts(session)
        with pytest.raises(NPlusOneError, match="ran 10 times in one transaction"):
            for ident in range(1, 51):
                session.expunge_all()
                posts.get_many([ident])


def test_an_eager_load_of_many_parents_is_never_caught(
    seeded_db: Database, observer: Observer
) -> None:
    # selectinload sends one SELECT per 500 parents, each the same statement
    with seeded_db.connection() as connection:
        rows = [{"name": f"extra {n}"} for n in range(10 * 500)]
        connection.execute(sa.insert(Author), rows)
        connection.commit()
    with seeded_db.session() as session:
        query = sa.select(Author).options(selectinload(Author.posts))
        assert sum(len(author.posts) for author in session.scalars(query)) == 10
        loaded = Authors(session).list(load=["posts"], limit=6000)
        assert sum(len(author.posts) for author in loaded) == 10


def test_the_shape_count_starts_over_with_each_transaction(
    seeded_db: Database, observer: Observer
) -> None:
    for ident in range(1, 10):
        with seeded_db.session() as session:
            for _ in range(9):
                session.expunge_all()
                Posts(session).get(ident)
    assert observer.nplusone.detections == 0


def test_the_threshold_is_configurable(seeded_db: Database) -> None:
    observer = install(seeded_db.engine, {"nplusone": "raise", "nplusone_threshold": 3})
    try:
        with seeded_db.session() as session, pytest.raises(NPlusOneError, match="ran 3 times"):
            for ident in (1, 2, 3):
                session.get(Post, ident)
    finally:
        observer.uninstall()


def test_detect_nplusone_overrides_the_mode_inside_the_block(seeded_db: Database) -> None:
    observer = install(seeded_db.engine, {"nplusone": "off"})
    try:
        with seeded_db.session() as session:
            for post in Posts(session).list():
                _ = post.author
        assert observer.nplusone.detections == 0
        with observer.detect_nplusone("raise"), seeded_db.session() as session:
            with pytest.raises(NPlusOneError):
                for post in Posts(session).list():
                    _ = post.author
        with seeded_db.session() as session:
            for post in Posts(session).list():
                _ = post.author
        assert observer.nplusone.detections == 1
    finally:
        observer.uninstall()


def test_an_unknown_mode_is_refused(seeded_db: Database) -> None:
    from dalkit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=re.escape("'off', 'warn', 'raise'")):
        install(seeded_db.engine, {"nplusone": "loud"})


def test_reflection_and_core_statements_are_not_counted(seeded_db: Database) -> None:
    observer = install(seeded_db.engine, {"nplusone": "raise", "nplusone_threshold": 2})
    metadata = sa.MetaData()
    for n in range(12):
        sa.Table(f"obs_extra_{n}", metadata, sa.Column("id", sa.Integer, primary_key=True))
    try:
        metadata.create_all(seeded_db.engine)  # one existence check per table
        with seeded_db.connection() as conn:
            inspector = sa.inspect(conn)
            columns = [inspector.get_columns(f"obs_extra_{n}") for n in range(12)]
            posts = sa.table("obs_posts", sa.column("id"))
            for ident in range(1, 5):
                conn.execute(sa.select(posts.c.id).where(posts.c.id == ident)).all()
        assert len(columns) == 12
        assert observer.nplusone.detections == 0
    finally:
        observer.uninstall()
