"""db.explain() of a repository read (RepositoryQuery) and of a QueryBuilder: the plan is of
exactly the SELECT the repository sends, soft-delete and tenant criteria and values included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import (
    AsyncDatabase,
    Database,
    InvalidFilterError,
    QueryBuilder,
    Repository,
    SoftDeleteMixin,
    TenantScoped,
    tenant,
)
from dalkit.errors import ConfigurationError
from dalkit.observe import RepositoryQuery
from dalkit.query.tenant import TenantRequiredError

from .models import AsyncPosts, Post, Posts
from .schema import BigRows, build_problems


class NotesBase(DeclarativeBase):
    pass


class Note(TenantScoped, SoftDeleteMixin, NotesBase):
    __tablename__ = "obs_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.String(50))


class Notes(Repository[Note]):
    pass


class _Sent:
    """Every statement the engine sends, with its parameters."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> _Sent:
        event.listen(self.engine, "before_cursor_execute", self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._note)

    def _note(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        self.statements.append((statement, params))

    def explained(self) -> tuple[str, Any]:
        """The statement under the EXPLAIN, and its parameters."""
        ((statement, params),) = [(s, p) for s, p in self.statements if s.startswith("EXPLAIN")]
        for prefix in ("EXPLAIN QUERY PLAN ", "EXPLAIN (FORMAT JSON) "):
            statement = statement.removeprefix(prefix)
        # SQLite's names the schema's version, so that a changed schema is planned anew
        return re.sub(r"^/\* schema \d+ \*/ ", "", statement), params


def test_the_plan_is_of_exactly_the_select_the_repository_sends(seeded_db: Database) -> None:
    with _Sent(seeded_db.engine) as sent, seeded_db.session() as session:
        Posts(session).list(title__startswith="post 1", sort="-title", limit=3, offset=1)
    ((read, read_params),) = sent.statements
    with _Sent(seeded_db.engine) as sent:
        query = RepositoryQuery(Posts, title__startswith="post 1", sort="-title", limit=3, offset=1)
        plan = seeded_db.explain(query)
    statement, params = sent.explained()
    assert (statement, params) == (read, read_params)
    assert "obs_posts" in plan.text
    assert repr(query) == "RepositoryQuery(Posts)"


def test_soft_delete_and_tenant_criteria_are_in_the_explained_select(db: Database) -> None:
    db.create_all(NotesBase.metadata)
    with tenant("t1"), db.session() as session:
        Notes(session).add_many([Note(body="a"), Note(body="b")])
    with tenant("t1"):
        with _Sent(db.engine) as sent, db.session() as session:
            Notes(session).list(body="a")
        ((read, read_params),) = sent.statements
        with _Sent(db.engine) as sent:
            db.explain(RepositoryQuery(Notes, body="a"))
    statement, params = sent.explained()
    assert (statement, params) == (read, read_params)
    assert "tenant_id" in statement
    assert "deleted_at IS NULL" in statement
    assert "t1" in (params.values() if isinstance(params, dict) else params)
    with pytest.raises(TenantRequiredError):
        db.explain(RepositoryQuery(Notes, body="a"))  # as list() would refuse it


async def test_an_async_repository_read_is_explained_too(seeded_async_db: AsyncDatabase) -> None:
    engine = seeded_async_db.engine.sync_engine
    with _Sent(engine) as sent:
        async with seeded_async_db.session() as session:
            posts = await AsyncPosts(session).list(author_id=2, load=["author"])
            assert {post.author.id for post in posts} == {2}
    read, read_params = sent.statements[0]
    with _Sent(engine) as sent:
        plan = await seeded_async_db.explain(
            RepositoryQuery(AsyncPosts, author_id=2, load=["author"])
        )
    statement, params = sent.explained()
    assert (statement, params) == (read, read_params)
    assert plan.backend == seeded_async_db.config.backend


def test_a_query_builder_is_explained(seeded_db: Database) -> None:
    builder = QueryBuilder(Post).where("title", "=", "post 1.1").order_by("id")
    plan = seeded_db.explain(builder)
    assert "obs_posts" in plan.text


def test_bad_repository_input_fails_before_any_sql(seeded_db: Database) -> None:
    with pytest.raises(InvalidFilterError):
        RepositoryQuery(Posts, no_such_field=1)
    with pytest.raises(ConfigurationError, match="repository class or instance"):
        RepositoryQuery(Post)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    database = Database(url.render_as_string(hide_password=False))
    try:
        yield database
    finally:
        database.dispose()


@pytest.mark.slow
def test_a_repository_filter_on_an_unindexed_column_warns_until_the_index_exists(
    pg_db: Database,
) -> None:
    build_problems(pg_db, big_rows=50_000)
    query = RepositoryQuery(BigRows, code=42)
    before = pg_db.explain(query)
    assert before.has_warning("seq_scan")
    assert "Seq Scan on adv_big" in before.text
    with pg_db.connection() as conn:
        conn.execute(sa.text("CREATE INDEX ix_adv_big_code ON adv_big (code)"))
        conn.execute(sa.text("ANALYZE adv_big"))
    after = pg_db.explain(query)
    assert after.warnings == ()
    assert "ix_adv_big_code" in after.text
