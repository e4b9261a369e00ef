"""No string literal of a statement reaches what an observer shows: the shapes of the query
statistics and N+1 warnings, the slow-query log and a budget's error, in every quoting form
(SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path

import pytest

from dalkit import Database
from dalkit.engine.sql_literals import COMMENT_MASK, as_read_by, mask_strings, shown_sql
from dalkit.observe import QueryBudgetExceededError, install, shapes
from dalkit.observe.querylog import shape_of

QUOTED = [
    "SELECT 'hunter2'",
    "SELECT 'it''s hunter2'",
    "SELECT E'it\\'s hunter2'",
    "SELECT $$it's hunter2$$",
    "SELECT $pw$hunter2 $$ still$pw$",
    "SELECT U&'hunter2'",
    "SELECT 1 -- it's\n, 'hunter2'",
    "SELECT 'hunter2' AS \"o'clock\"",
    "SELECT /* don't */ 'hunter2'",
    "SELECT /* a /* don't */ */ 'hunter2'",
]

# a secret (or a tracing comment's request id) in a comment, in each place one may stand: the
# comments before, inside and after "SELECT a FROM t WHERE b = ?"
COMMENTED = [
    f"{before}SELECT a {inside}FROM t WHERE b = ?{after}"
    for before, inside, after in [
        ("/* token=hunter2 */ ", "", ""),
        ("/*+ IndexScan(t) hunter2 */", "", ""),
        ("-- api_key=hunter2\n", "", ""),
        ("", "", " /* traceparent='00-hunter2-01' */"),
        ("", "/* it's hunter2 */ ", " -- hunter2"),
        # PostgreSQL nests block comments: the first */ left "token=hunter2 */" in the shape
        ("/* a /* b */ token=hunter2 */ ", "", ""),
        ("", "/* a /* b */ it's hunter2 /* c */ */ ", ""),
        # SQLite ends one left open at the end of the text: it was shown whole
        ("", "", " /* token=hunter2"),
    ]
]


@pytest.mark.parametrize("statement", COMMENTED)
def test_a_comment_reaches_no_shape_and_no_shown_text(statement: str) -> None:
    # a comment kept in the shape showed its secret in the statistics and N+1 reports, made each
    # request id a shape of its own, and a leading one made a SELECT an OTHER in the metrics
    shape = shape_of(statement)
    assert (shape.text, shape.operation) == ("SELECT a FROM t WHERE b = ?", "SELECT")
    shown = shown_sql(statement, 2000)
    assert "hunter2" not in shown
    assert COMMENT_MASK in shown
    assert shown.replace(COMMENT_MASK, "").split() == shape.text.split()
    # the start shown reads as the start of all of it
    for chars in range(1, len(shown) + 2):
        assert shown_sql(statement, chars) == shown[:chars]


@pytest.mark.parametrize("statement", QUOTED)
def test_no_quoting_form_leaves_a_literal_in_a_shape_or_a_masked_text(statement: str) -> None:
    assert "hunter2" not in shape_of(statement).text
    assert "hunter2" not in mask_strings(statement)
    assert mask_strings(statement).count("'***'") == 1


def test_a_comment_that_never_closes_its_nesting_ends_at_its_first_close() -> None:
    # SQLite's reading (its comments do not nest); PostgreSQL refuses such a statement
    for statement, after in [
        ("/* a /* b */ SELECT 1", ""),
        ("/* a /* b */ SELECT 1 /* c */", " /* c */"),
    ]:
        shape = shape_of(statement)
        assert (shape.text, shape.operation) == ("SELECT ?", "SELECT")
        assert (
            shown_sql(statement, 2000) == f"{COMMENT_MASK} SELECT 1{after and ' ' + COMMENT_MASK}"
        )


def test_what_is_not_a_literal_stays() -> None:
    statement = "SELECT \"o'clock\", $1, x -- it's\nFROM t WHERE y = ? /* a'b */"
    assert mask_strings(statement) == statement
    assert shape_of("SELECT a FROM t WHERE b = $1 AND c = 'x'").text == (
        "SELECT a FROM t WHERE b = ? AND c = ?"
    )


@pytest.mark.parametrize("statement", [*QUOTED, "SELECT 'a'  ,\n\n  \"b\"  ,  'it''s'"])
def test_the_start_shown_of_a_statement_is_the_start_of_all_of_it_masked(statement: str) -> None:
    # only the start shown is scanned: cut anywhere, even inside a literal, it reads the same
    for chars in range(1, len(statement) + 2):
        assert (
            shown_sql(statement * 3, chars)
            == " ".join(mask_strings(statement * 3, comments=COMMENT_MASK).split())[:chars]
        )


def _secret_statement(db: Database) -> str:
    if db.config.backend == "postgresql":
        literals = "$$hunter2$$ AS a, E'hunter3\\'s' AS b"
    else:
        literals = "'hunter2' AS a, 'hunter3''s' AS b"
    return f"/* token=hunter5 */ SELECT {literals}, 'hunter4' AS c -- it's"


def test_the_slow_log_and_the_statistics_show_no_literal(
    seeded_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    observer = install(seeded_db.engine, {"slow_query_ms": 0})
    try:
        with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
            assert seeded_db.sql(_secret_statement(seeded_db))[0]["a"] == "hunter2"
        (logged,) = [r.getMessage() for r in caplog.records if "AS a" in r.getMessage()]
        (shown,) = [
            (s["statement"], s["operation"])
            for s in observer.query_stats(top=None)
            if "AS a" in s["statement"]
        ]
    finally:
        observer.uninstall()
    assert re.search(
        r"\n/\* \*\*\* \*/ SELECT '\*\*\*' AS a, E?'\*\*\*' AS b, '\*\*\*' AS c /\* \*\*\* \*/",
        logged,
    )
    assert re.fullmatch(r"SELECT \? AS a, E?\? AS b, \? AS c", shown[0])  # its comments dropped
    assert shown[1] == "SELECT"
    for secret in ("hunter2", "hunter3", "hunter4", "hunter5"):
        assert secret not in logged
        assert secret not in shown[0]


def test_a_budget_s_error_shows_no_literal(seeded_db: Database) -> None:
    observer = install(seeded_db.engine)
    try:
        with pytest.raises(QueryBudgetExceededError) as caught:
            with observer.query_budget(max_queries=0):
                seeded_db.sql(_secret_statement(seeded_db))
    finally:
        observer.uninstall()
    assert "'***' AS a" in str(caught.value)
    assert "hunter" not in str(caught.value)
    assert "hunter2" in caught.value.statements[0][0]  # the statements themselves, for the caller


def test_a_huge_statement_is_shaped_with_no_python_call_per_literal() -> None:
    # a Python callback per literal made the statistics of one 1.8 MB INSERT of inline
    # literals cost 0.2-0.6 s; the literals are masked in C now
    rows = ", ".join(f"({n}, 'secret{n}', E'x\\\\{n}', $${n}$$, -{n}.5)" for n in range(5_000))
    statement = f'INSERT INTO "t" (a, b, c, d, e) VALUES {rows} -- it\'s'
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        shape = shape_of(statement)
        masked = mask_strings(statement)
    finally:
        sys.setprofile(None)
    assert calls < 50, calls
    rows_shape = ", ".join(["(?, ?, E?, ?, ?)"] * 5_000)
    whole = f'INSERT INTO "t" (a, b, c, d, e) VALUES {rows_shape}'  # its comment dropped
    # the text kept: its start, then the length and a digest of all of it
    digest = hashlib.blake2b(whole.encode(), digest_size=8).hexdigest()
    assert shape.text == (
        f"{whole[: shapes.MAX_SHAPE_CHARS]}... ({len(whole)} characters, digest {digest})"
    )
    assert "secret" not in masked
    assert masked.count("'***'") == 15_000


# the same text read by each database: PostgreSQL nests block comments, so "/* a /* b */, 3 AS
# token -- */" is one comment and the query SELECT 1, 2; SQLite ends the comment at its first
# "*/", and the rest is code (3 AS token) and a line comment
NESTED = "SELECT 1 /* a /* b */, 3 AS token -- */, 2"
READ_AS = {
    "postgres": ((1, 2), "SELECT ? , ?", f"SELECT 1 {COMMENT_MASK}, 2"),
    "sqlite": (
        (1, 3),
        "SELECT ? , ? AS token",
        f"SELECT 1 {COMMENT_MASK}, 3 AS token {COMMENT_MASK}",
    ),
}


def test_a_nested_comment_is_masked_as_each_database_reads_it(
    db: Database, db_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite's statements were read with PostgreSQL's nesting: its code after the first "*/"
    # was masked as comment, out of the shape and the slow-query log
    row, shape, shown = READ_AS[db_backend]
    observer = install(db.engine, {"slow_query_ms": 0, "query_stats": True})
    try:
        with caplog.at_level(logging.WARNING, "dalkit.slow_query"), db.connection() as connection:
            assert tuple(connection.exec_driver_sql(NESTED).one()) == row
        assert [s["statement"] for s in observer.query_stats()] == [shape]
        assert caplog.records[-1].getMessage().splitlines()[1] == shown
    finally:
        observer.uninstall()


def test_a_value_compared_after_a_nested_comment_on_sqlite_is_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the comparison with a secret's column was masked as comment: its value, named by no
    # column, was logged
    statement = (
        "SELECT 1 /* a /* b */, password FROM (SELECT 'x' AS password) WHERE password = ? -- */"
    )
    with Database(f"sqlite:///{tmp_path / 'a.db'}", slow_query_ms=0) as db:
        with caplog.at_level(logging.WARNING, "dalkit.slow_query"), db.connection() as connection:
            connection.exec_driver_sql(statement, ("hunter2",))
        stats = db.query_stats()
    logged = caplog.records[-1].getMessage()
    assert "hunter2" not in logged
    assert logged.splitlines()[-1] == "parameters: ['***']"
    assert [s["statement"] for s in stats] == [
        "SELECT ? , password FROM (SELECT ? AS password) WHERE password = ?"
    ]


def test_a_dollar_opens_a_literal_on_postgresql_only() -> None:
    # SQLite has no dollar quoting: "$a$ ... $a$" there is two parameters named "a$", and the
    # code between them, read as a literal, was masked from the slow-query log's reading
    statement = "SELECT $a$, 'x' /* c */ FROM t WHERE password = $pw AND b = $a$"
    sqlite = as_read_by("sqlite", statement)
    assert mask_strings(sqlite, comments="") == (
        "SELECT $a$, '***'  FROM t WHERE password = $pw AND b = $a$"
    )
    assert (
        shown_sql(sqlite, 200)
        == "SELECT $a$, '***' /* *** */ FROM t WHERE password = $pw AND b = $a$"
    )
    assert mask_strings(as_read_by("postgresql", statement)) == "SELECT '***'"
    assert shape_of(sqlite).text == "SELECT $a$, ? FROM t WHERE password = $pw AND b = $a$"
