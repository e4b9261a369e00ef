"""EXPLAIN on SQLite, and table statistics on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.errors import InvalidQueryError
from dalkit.observe import (
    explain,
    explain_async,
    index_advice_async,
    table_stats,
    table_stats_async,
)

from .models import Author, Base, Post, seed_rows


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    database.create_all(Base.metadata)
    with database.session() as session:
        session.add_all(seed_rows())
    try:
        yield database
    finally:
        database.dispose()


def test_sqlite_plans_flag_full_scans_and_sorts_until_an_index_serves(sqlite_db: Database) -> None:
    lookup = sa.select(Post).where(Post.title == sa.bindparam("title"))
    ordered = sa.select(Post).order_by(Post.title)
    with sqlite_db.connection() as conn:
        plan = explain(conn, lookup, {"title": "post 1.1"})
        assert plan.backend == "sqlite"
        assert "SCAN obs_posts" in plan.text
        assert [w.kind for w in plan.warnings] == ["full_scan"]
        assert [w.kind for w in explain(conn, ordered).warnings] == ["full_scan", "temp_btree"]
        conn.execute(sa.text("CREATE INDEX ix_posts_title ON obs_posts (title)"))
        after = explain(conn, lookup, {"title": "post 1.1"})
        assert after.warnings == ()
        assert "ix_posts_title" in after.text
        assert explain(conn, ordered).warnings == ()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "VALUES (1), (2)",
        "SELECT * FROM (VALUES (1), (2))",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n<5) SELECT n FROM c",
    ],
)
def test_sqlite_scans_of_no_table_are_not_full_scans(sqlite_db: Database, sql: str) -> None:
    # 'SCAN CONSTANT ROW' (SELECT 1) was flagged: "every row of CONSTANT is read; an index ...
    # lets SQLite seek", exit 1 from dalkit inspect explain; so were a subquery's and a CTE's
    with sqlite_db.connection() as conn:
        plan = explain(conn, sql)
        assert plan.warnings == (), plan.text
        assert explain(conn, "SELECT * FROM (SELECT title FROM obs_posts)").warnings != ()


def test_a_sqlite_plan_shows_an_index_another_connection_made_since(sqlite_db: Database) -> None:
    lookup = sa.select(Post).where(Post.title == sa.bindparam("title"))
    with sqlite_db.connection() as one, sqlite_db.connection() as two:
        assert "SCAN obs_posts" in explain(one, lookup, {"title": "post 1.1"}).text
        two.execute(sa.text("CREATE INDEX ix_posts_title ON obs_posts (title)"))
    # the pool hands back the same two: one's schema and its prepared EXPLAIN predate the index
    with sqlite_db.connection() as one, sqlite_db.connection() as two:
        plans = [explain(c, lookup, {"title": "post 1.1"}) for c in (one, two)]
    assert ["ix_posts_title" in plan.text for plan in plans] == [True, True]
    assert [plan.warnings for plan in plans] == [(), ()]


def test_a_lookup_by_primary_key_has_no_warnings(seeded_db: Database) -> None:
    with seeded_db.connection() as conn:
        plan = explain(conn, "SELECT * FROM obs_authors WHERE id = :id", {"id": 1})
    assert plan.warnings == ()
    assert "SEARCH obs_authors" in plan.text or "Index Scan on obs_authors" in plan.text


def test_text_with_a_pasted_value_is_refused(seeded_db: Database) -> None:
    with seeded_db.connection() as conn, pytest.raises(InvalidQueryError):
        explain(conn, "SELECT * FROM obs_authors WHERE id = 1; DROP TABLE obs_authors")


def test_table_stats_on_both_backends(seeded_db: Database) -> None:
    with seeded_db.connection() as conn:
        everything = {s.table: s for s in table_stats(conn)}
        (posts,) = table_stats(conn, "obs_posts")
    assert {"obs_authors", "obs_posts"} <= set(everything)
    if seeded_db.config.backend == "postgresql":
        assert posts.schema == "public"
        assert posts.total_bytes
        assert posts.total_bytes > 0
        assert posts.seq_scans is not None
        assert posts.dead_rows is not None
        assert posts.rows in (0, 10)  # live rows as last reported by the server
    else:
        assert posts.rows == 10
    assert "ix_obs_posts_author_id" in posts.indexes
    assert posts.as_dict()["table"] == "obs_posts"


def test_an_unknown_table_is_a_clear_error(seeded_db: Database) -> None:
    with seeded_db.connection() as conn, pytest.raises(InvalidQueryError, match="no table named"):
        table_stats(conn, "nope'; --")


def test_explain_takes_orm_statements_with_their_parameters_bound(seeded_db: Database) -> None:
    with seeded_db.session() as session:
        plan = explain(session, sa.select(Author).where(Author.name.in_(["a", "b"])))
    assert plan.data
    assert plan.text


async def test_the_async_forms_run_through_run_sync(seeded_async_db: AsyncDatabase) -> None:
    async with seeded_async_db.engine.connect() as conn:
        plan = await explain_async(conn, "SELECT * FROM obs_posts WHERE id = :id", {"id": 1})
        (posts,) = await table_stats_async(conn, "obs_posts")
        advice = await index_advice_async(conn, None, repositories=[])
    assert plan.warnings == ()
    assert posts.table == "obs_posts"
    assert [a for a in advice if a.table.startswith("obs_")] == []


def test_a_number_compared_from_the_left_with_a_secret_is_masked_in_a_plan(
    postgres_database_url: str,
) -> None:
    # only "(pin_secret = 987654)" was masked: "(987654 = pin_secret)" was shown
    with Database(postgres_database_url) as db:
        db.sql("CREATE TABLE pins (id serial PRIMARY KEY, pin_secret int, token_id bigint, n int)")
        pins = sa.table("pins", sa.column("pin_secret"), sa.column("token_id"), sa.column("n"))
        plans = [
            db.explain(sa.select(pins).where(sa.literal(987654) == pins.c.pin_secret)),
            db.explain("SELECT * FROM pins WHERE :t < token_id", {"t": 987654}),
            db.explain(sa.select(pins).where(sa.literal(987654) == pins.c.n)),
        ]
    assert "(*** = pin_secret)" in plans[0].text
    assert "987654" not in plans[0].text + str(plans[0].data)
    assert "987654" not in plans[1].text + str(plans[1].data)
    assert "(987654 = n)" in plans[2].text  # a column not named like a secret: shown


def test_a_number_compared_with_an_expression_over_a_secret_is_masked_in_a_plan(
    postgres_database_url: str,
) -> None:
    # "((pin_secret + 1) = 987654)", "(COALESCE(pin_secret, 0) = 987654)" and "(pin_secret IS
    # DISTINCT FROM 987654)" were shown: only a bare column before or after the number counted
    with Database(postgres_database_url) as db:
        db.sql("CREATE TABLE pins (id serial PRIMARY KEY, pin_secret int, author int)")
        plans = [
            db.explain(f"SELECT * FROM pins WHERE {where}", {"v": 987654})
            for where in (
                "pin_secret + 1 = :v",
                "pin_secret * 2 > :v",
                "coalesce(pin_secret, 0) = :v",
                "pin_secret IS DISTINCT FROM :v",
                "author = :v",  # "auth" is no secret's word inside "author": shown
            )
        ]
    for plan in plans[:-1]:
        assert "987654" not in plan.text + str(plan.data), plan.text
    assert "((pin_secret + ***) = ***)" in plans[0].text
    assert "(author = 987654)" in plans[-1].text


def test_a_number_given_to_a_parameter_named_like_a_secret_is_masked_in_a_plan(
    postgres_database_url: str,
) -> None:
    # the slow-query log masked "code = :otp" by the parameter's name; the plan showed
    # "(code = 917355)", as only a column named like a secret counted there
    with Database(postgres_database_url) as db:
        db.sql("CREATE TABLE codes (id serial PRIMARY KEY, code int)")
        codes = sa.table("codes", sa.column("id"), sa.column("code"))
        plans = [
            db.explain("SELECT * FROM codes WHERE code = :otp AND id <> 5", {"otp": 917355}),
            db.explain(sa.select(codes).where(codes.c.code == sa.bindparam("pin", 917355))),
            db.explain("SELECT * FROM codes WHERE code = :n", {"n": 917355}),
        ]
    for plan in plans[:-1]:
        assert "917355" not in plan.text + str(plan.data), plan.text
    assert "(code = ***)" in plans[0].text
    assert "(id <> 5)" in plans[0].text  # the other numbers stay
    assert "(code = 917355)" in plans[-1].text  # a parameter not named like a secret: shown
