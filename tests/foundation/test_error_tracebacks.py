"""A dalkit error is raised ``from`` the driver's own exception, and a printed traceback
(``logging.exception``, an uncaught error) prints that cause's text too: it holds no value the
dalkit error's own message masks, under psycopg, asyncpg and SQLite, while the cause keeps its
type and SQLSTATE for debugging."""

from __future__ import annotations

import traceback
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import (
    AsyncDatabase,
    ConnectionFailedError,
    Database,
    DatabaseError,
    UniqueViolationError,
)

SECRET = "tok_S3cr3t"
SCHEMA = "CREATE TABLE keys (id int PRIMARY KEY, api_token text UNIQUE)"
# a unique violation quotes the key (DETAIL: Key (api_token)=(...)); a cast the text refused
WRITES = {
    "unique": ("INSERT INTO keys VALUES (2, :v)", UniqueViolationError),
    "cast": ("SELECT CAST(:v AS integer)", DatabaseError),
}


def _printed(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


@pytest.mark.postgres
@pytest.mark.parametrize("case", sorted(WRITES))
def test_a_psycopg_errors_printed_traceback_shows_no_value(
    postgres_database_url: str, case: str
) -> None:
    sql, kind = WRITES[case]
    with Database(postgres_database_url) as db:
        db.sql(SCHEMA)
        db.sql("INSERT INTO keys VALUES (1, :v)", v=SECRET)
        with pytest.raises(kind) as caught:
            db.sql(sql, v=SECRET)
    printed = _printed(caught.value)
    assert SECRET not in printed, printed
    assert "psycopg.errors." in printed  # the chain is kept, with the driver's words
    driver = caught.value.__cause__
    assert isinstance(driver, psycopg.Error)
    assert driver.sqlstate == caught.value.sqlstate
    if case == "unique":
        assert "DETAIL:  Key (api_token)=(***) already exists." in printed
        assert caught.value.constraint == "keys_api_token_key"
        # code that asks the driver's diagnostics for the value still finds it
        assert SECRET in (driver.diag.message_detail or "")


@pytest.mark.postgres
@pytest.mark.parametrize("case", sorted(WRITES))
async def test_an_asyncpg_errors_printed_traceback_shows_no_value(
    postgres_database_url: str, case: str
) -> None:
    sql, kind = WRITES[case]
    async with AsyncDatabase(postgres_database_url) as db:
        await db.sql(SCHEMA)
        await db.sql("INSERT INTO keys VALUES (1, :v)", v=SECRET)
        with pytest.raises(kind) as caught:
            await db.sql(sql, v=SECRET)
    printed = _printed(caught.value)
    assert SECRET not in printed, printed
    assert "asyncpg.exceptions." in printed
    if case == "unique":
        assert "DETAIL:  Key (api_token)=(***) already exists." in printed
        assert caught.value.sqlstate == "23505"
        assert [getattr(e, "sqlstate", None) for e in _chain(caught.value)][-1] == "23505"


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_a_failed_connections_printed_traceback_shows_no_password(
    postgres_database_url: str, driver: str
) -> None:
    url = make_url(postgres_database_url).set(drivername=f"postgresql+{driver}")
    url = url.set(password=SECRET)
    with pytest.raises(ConnectionFailedError) as caught:
        if driver == "asyncpg":
            async with AsyncDatabase(url) as adb:
                await adb.sql("SELECT 1")
        else:
            with Database(url) as db:
                db.sql("SELECT 1")
    printed = _printed(caught.value)
    assert "password authentication failed" in printed
    assert SECRET not in printed, printed


def test_a_sqlite_errors_printed_traceback_shows_no_value(tmp_path: Path) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "keys",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Enum("a", "b", name="kind", validate_strings=True)),
    )
    with Database(f"sqlite:///{tmp_path / 'keys.db'}") as db:
        metadata.create_all(db.engine)
        # SQLAlchemy's Enum refuses the value: a LookupError raised from a KeyError of it
        with pytest.raises(DatabaseError) as caught, db.transaction() as session:
            session.execute(table.insert().values(kind=SECRET))
    printed = _printed(caught.value)
    assert SECRET not in printed, printed
    assert "is not among the defined enum values" in printed
    assert "LookupError" in printed
