"""The raw-SQL guard reads quotes, comments and dollar quotes as PostgreSQL and SQLite do: text
that the database would run as a second statement is refused, and ``:name`` inside a literal
stays text instead of becoming a bound parameter."""

from __future__ import annotations

import pytest

from dalkit import AsyncDatabase, Database, InvalidQueryError
from dalkit.query.raw_sql import checked_text

# each hides a second statement from a checker that reads quotes differently from the server
SMUGGLED = [
    "SELECT 1 AS a$$, 2; DELETE FROM t; SELECT 3 AS b$$",  # a$$ is an identifier, not a quote
    "SELECT 1 AS x$y$, 2; DELETE FROM t; SELECT 3 AS z$y$",
    "SELECT 'a\\'; DELETE FROM t; --'",  # a backslash escapes nothing in a standard string
    "SELECT E'\\''; DELETE FROM t; --'",  # ... but does in an E'' string
    "SELECT 1 # 2; DELETE FROM t",  # '# ' is XOR in PostgreSQL, not a comment
    "SELECT /* /* */ ' */ ; DELETE FROM t; -- '",  # PostgreSQL nests block comments
    "SELECT 1 [; DELETE FROM t; SELECT 1]",  # brackets quote nothing in PostgreSQL
    'SELECT "a\\"; DELETE FROM t; --"',
    "SELECT 1 --\n; DELETE FROM t",
    "SELECT 'unterminated",
]
ACCEPTED = [
    "SELECT $$ ; DELETE FROM t; $$ AS v",
    "SELECT $tag$ it's ; :x $tag$ AS v",
    "SELECT E'\\'' AS v",
    "SELECT 'it''s ; -- not a comment' AS v",
    'SELECT 1 AS "semi;colon"',
    "SELECT 1 AS v -- trailing ; comment",
    "SELECT 1 AS v;",
]


@pytest.mark.parametrize("statement", SMUGGLED)
def test_a_second_statement_hidden_by_quoting_tricks_is_refused(statement: str) -> None:
    with pytest.raises(InvalidQueryError):
        checked_text(statement, {})


@pytest.mark.parametrize("statement", ACCEPTED)
def test_semicolons_inside_quotes_and_comments_are_text(statement: str) -> None:
    checked_text(statement, {})


def test_a_colon_name_inside_a_literal_is_not_a_parameter() -> None:
    clause = checked_text("SELECT ':x' AS v, :y AS w -- :z", {"y": 1})
    assert set(clause._bindparams) == {"y"}
    with pytest.raises(InvalidQueryError, match="not in the SQL"):
        checked_text("SELECT ':x' AS v", {"x": 1})


def test_a_parameter_cast_with_double_colons_is_named_with_the_cast_to_write() -> None:
    # SQLAlchemy's text() reads ":x::text" as no parameter at all; before, the error said only
    # that x was not in the SQL, which it plainly is
    with pytest.raises(InvalidQueryError, match=r"write CAST\(:x AS type\)"):
        checked_text("SELECT :x::text AS v", {"x": "5"})
    assert set(checked_text("SELECT CAST(:x AS text) AS v", {"x": "5"})._bindparams) == {"x"}


def _seed(db: Database) -> None:
    db.sql("CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR(40))")
    for i in range(3):
        db.sql("INSERT INTO t (id, note) VALUES (:id, :note)", id=i, note=f"n{i}")


def test_db_sql_refuses_the_dollar_identifier_attack_and_keeps_every_row(db: Database) -> None:
    _seed(db)
    with pytest.raises(InvalidQueryError, match="second statement"):
        db.sql("SELECT 1 AS a$$, 2; DELETE FROM t; SELECT 3 AS b$$")
    assert db.sql("SELECT count(*) AS n FROM t")[0]["n"] == 3


def test_db_sql_returns_a_colon_name_in_a_literal_as_written(db: Database) -> None:
    _seed(db)
    rows = db.sql("SELECT ':x' AS v, note FROM t WHERE note = :note", note="n1")
    assert [dict(r) for r in rows] == [{"v": ":x", "note": "n1"}]
    assert db.sql("SELECT 'a\\:b::c' AS v")[0]["v"] == "a\\:b::c"


async def test_async_db_sql_refuses_smuggled_statements(async_db: AsyncDatabase) -> None:
    await async_db.sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    await async_db.sql("INSERT INTO t (id) VALUES (1)")
    for statement in SMUGGLED:
        with pytest.raises(InvalidQueryError):
            await async_db.sql(statement)
    assert (await async_db.sql("SELECT count(*) AS n FROM t"))[0]["n"] == 1


async def test_async_db_sql_returns_a_colon_name_in_a_literal_as_written(
    async_db: AsyncDatabase,
) -> None:
    rows = await async_db.sql("SELECT ':x' AS v, :y AS w", y="bound")
    assert [dict(r) for r in rows] == [{"v": ":x", "w": "bound"}]
