"""PostgreSQL's error reports quote the values written (``Key (email)=(...) already exists``,
``Failing row contains (...)``, ``invalid input syntax for type integer: "..."``, a CONTEXT
line per parameter): dalkit's errors keep the words, the names and the SQLSTATE, never a value,
under both drivers; so does the driver's exception, its ``__cause__``, which a traceback prints
(psycopg's ``diag`` keeps them for code that asks)."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from dalkit import AsyncDatabase, Database, DatabaseError
from dalkit.driver_messages import safe_text

pytestmark = pytest.mark.postgres

SECRET = "tok_S3cr3t"
SCHEMA = [
    "CREATE TABLE parents (id int PRIMARY KEY, email text UNIQUE)",
    "CREATE UNIQUE INDEX parents_lower ON parents (lower(email))",
    "CREATE TABLE kids (id int PRIMARY KEY, parent_email text REFERENCES parents (email), "
    "note text NOT NULL, n int CHECK (n > 0))",
    "INSERT INTO parents VALUES (1, 'tok_S3cr3t')",
    "INSERT INTO kids VALUES (1, 'tok_S3cr3t', 'a note', 1)",
    "SET log_parameter_max_length_on_error = -1",  # CONTEXT: parameter $1 = '<the value>'
]
# statement, its parameters, and what the error says instead of the value
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "unique": (
        "INSERT INTO parents VALUES (2, :v)",
        {"v": SECRET},
        'unique constraint "parents_email_key"\nDETAIL:  Key (email)=(***) already exists.',
    ),
    "unique expression": (
        "INSERT INTO parents VALUES (3, :v)",
        {"v": SECRET.upper()},
        "Key (lower(email))=(***) already exists.",
    ),
    "foreign key": (
        "INSERT INTO kids VALUES (2, :v, 'a note', 1)",
        {"v": SECRET + "_gone"},
        'DETAIL:  Key (parent_email)=(***) is not present in table "parents".',
    ),
    "not null": (
        "INSERT INTO kids VALUES (3, :v, NULL, 1)",
        {"v": SECRET},
        'null value in column "note" of relation "kids" violates not-null constraint\n'
        "DETAIL:  Failing row contains (***).",
    ),
    "check": (
        "INSERT INTO kids VALUES (4, NULL, :v, -1)",
        {"v": SECRET},
        "DETAIL:  Failing row contains (***).",
    ),
    "a literal in a syntax error": (
        "UPDATE kids SET note = 'a' 'tok_S3cr3t'",
        {},
        'syntax error at or near "***"',
    ),
    "not a number": (
        "UPDATE kids SET n = CAST(:v AS integer)",
        {"v": SECRET},
        'invalid input syntax for type integer: "***"',
    ),
}


def _check(case: str, error: DatabaseError) -> None:
    shown = CASES[case][2]
    assert SECRET.lower() not in str(error).lower(), str(error)
    assert shown in str(error)
    # the driver's own, its __cause__, which a traceback prints: masked the same way
    driver = error.__cause__
    assert SECRET.lower() not in f"{driver} {getattr(driver, 'detail', '')}".lower()
    printed = "".join(traceback.format_exception(error))
    assert SECRET.lower() not in printed.lower(), printed
    assert printed.count(shown) >= 2, printed  # the dalkit error's and the driver's


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_postgres_error_names_the_constraint_but_not_the_value(
    postgres_database_url: str, case: str
) -> None:
    with Database(postgres_database_url) as db:
        for statement in SCHEMA[:-1]:
            db.sql(statement)
        sql, params, _ = CASES[case]
        with pytest.raises(DatabaseError) as caught, db.transaction():
            db.sql(SCHEMA[-1])
            db.sql(sql, **params)
    _check(case, caught.value)
    if case == "not null":
        assert (caught.value.table, caught.value.column) == ("kids", "note")
    if case == "foreign key":
        assert caught.value.sqlstate == "23503"
        assert caught.value.constraint == "kids_parent_email_fkey"


@pytest.mark.parametrize("case", sorted(CASES))
async def test_asyncpg_errors_name_the_constraint_but_not_the_value(
    postgres_database_url: str, case: str
) -> None:
    async with AsyncDatabase(postgres_database_url) as db:
        for statement in SCHEMA[:-1]:
            await db.sql(statement)
        sql, params, _ = CASES[case]
        with pytest.raises(DatabaseError) as caught:
            async with db.transaction():
                await db.sql(SCHEMA[-1])
                await db.sql(sql, **params)
    if case == "not a number":  # asyncpg refuses the text itself: its own words, masked
        assert SECRET not in str(caught.value)
        return
    _check(case, caught.value)


def test_a_driver_refusing_to_encode_a_value_keeps_the_type_but_not_the_value() -> None:
    refusal = ValueError(f"invalid UUID '{SECRET}': length must be between 32..36 characters")
    assert safe_text(refusal) == "invalid UUID '***': length must be between 32..36 characters"
    wrong_type = TypeError("'str' object cannot be interpreted as an integer")
    assert safe_text(wrong_type) == str(wrong_type)
    assert safe_text(OSError("[Errno 111] Connect call failed ('127.0.0.1', 1)")) is None
