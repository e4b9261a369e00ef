"""The slow-query log masks a value by the column the SQL gives it on every path a statement
takes to the driver: sync and async on sqlite3, psycopg, aiosqlite and asyncpg; the ORM's
single and multi-row inserts (insertmanyvalues), executemany, Core, text and ``db.sql``,
``UPDATE ... SET`` and ``WHERE`` comparisons. Where the text does not say which column a value
goes to, in a statement writing a secret-looking column, the value is masked (fails closed)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, Database
from dalkit.observe import install
from dalkit.observe.param_columns import ParameterColumns, parameter_columns
from dalkit.observe.querylog import SlowQueryLog, named_columns, positional_names

SECRET = "hunter2-TOPSECRET"


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "masked_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100))
    password: Mapped[str] = mapped_column(sa.String(100))


TABLE = Base.metadata.tables["masked_accounts"]
INSERT_TEXT = "INSERT INTO masked_accounts (email, password) VALUES (:e, :p)"


def _rows(prefix: str, count: int = 3) -> list[dict[str, Any]]:
    return [{"email": f"{prefix}{n}@x", "password": SECRET} for n in range(count)]


def _accounts(prefix: str, count: int = 3) -> list[Account]:
    return [Account(**row) for row in _rows(prefix, count)]


def _update_many() -> sa.Update:
    # bind names that say nothing: the SET and the WHERE say which column each value is for
    return (
        sa.update(TABLE)
        .where(TABLE.c.email == sa.bindparam("e"))
        .values(password=sa.bindparam("p"))
    )


def _sync_paths(db: Database) -> dict[str, Callable[[], object]]:
    mark = "%s" if db.engine.dialect.name == "postgresql" else "?"

    def orm(*accounts: Account) -> None:
        with db.session() as session:
            session.add_all(accounts)

    def core(statement: sa.Executable, rows: list[dict[str, Any]] | None = None) -> None:
        with db.transaction() as session:
            session.execute(statement, rows)

    def orm_update() -> None:
        with db.transaction() as session:
            for account in session.scalars(sa.select(Account).limit(2)):
                account.password = f"{SECRET}!"  # a change: the rows hold SECRET already

    def text_executemany() -> None:
        with db.connection() as connection:
            connection.execute(sa.text(INSERT_TEXT), [{"e": "t1@x", "p": SECRET}] * 2)

    def driver_sql() -> None:
        with db.connection() as connection:
            connection.exec_driver_sql(
                f"INSERT INTO masked_accounts (email, password) VALUES ({mark}, {mark})",
                ("d1@x", SECRET),
            )

    return {
        "ORM add": lambda: orm(*_accounts("one", 1)),
        "ORM add_all": lambda: orm(*_accounts("orm")),
        "Core insert().values([rows])": lambda: core(sa.insert(Account).values(_rows("val", 2))),
        "Core executemany": lambda: core(sa.insert(Account), _rows("many")),
        "Core executemany RETURNING": lambda: core(
            sa.insert(Account).returning(Account.id), _rows("ret")
        ),
        "Core insert of trim(value)": lambda: core(
            sa.insert(Account).values(email="fn@x", password=sa.func.trim(SECRET))
        ),
        "Core UPDATE executemany": lambda: core(
            _update_many(), [{"e": "many0@x", "p": SECRET}, {"e": "many1@x", "p": SECRET}]
        ),
        "ORM update": orm_update,
        "db.sql INSERT": lambda: db.sql(INSERT_TEXT, e="sql@x", p=SECRET),
        "db.sql UPDATE SET": lambda: db.sql(
            "UPDATE masked_accounts SET password = :p WHERE email = :e", p=SECRET, e="sql@x"
        ),
        "db.sql WHERE": lambda: db.sql(
            "SELECT id FROM masked_accounts WHERE password = :p AND email = :e", p=SECRET, e="w@x"
        ),
        "text executemany": text_executemany,
        "exec_driver_sql": driver_sql,
    }


def _leak(records: list[logging.LogRecord], name: str) -> tuple[str, str] | None:
    """The statement and parameters of a message showing the secret, if one does."""
    messages = [r.getMessage() for r in records if "masked_accounts" in r.getMessage()]
    assert messages, "nothing logged"
    for message in messages:
        if SECRET in message:
            return message.splitlines()[1][:120], message.splitlines()[2][:200]
    # the harmless values still show: an e-mail, or the id an ORM update goes by
    harmless = re.compile(r"\b\d+[\]}]" if name == "ORM update" else "@x")
    assert any(harmless.search(m.splitlines()[-1]) for m in messages), messages
    return None


def test_no_sync_path_shows_a_password(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    db.create_all(Base.metadata)
    caplog.set_level(logging.WARNING, "dalkit.slow_query")
    observer = install(db.engine, {"slow_query_ms": 0})
    leaks = {}
    try:
        for name, run in _sync_paths(db).items():
            caplog.clear()
            run()
            if (leak := _leak(caplog.records, name)) is not None:
                leaks[name] = leak
    finally:
        observer.uninstall()
    assert sorted(leaks) == [], leaks  # the paths that showed it


async def test_no_async_path_shows_a_password(
    async_db: AsyncDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    await async_db.create_all(Base.metadata)
    caplog.set_level(logging.WARNING, "dalkit.slow_query")
    observer = install(async_db.engine, {"slow_query_ms": 0})
    marks = ("$1", "$2") if async_db.engine.dialect.name == "postgresql" else ("?", "?")

    async def orm(prefix: str, count: int) -> None:
        async with async_db.session() as session:
            session.add_all(_accounts(prefix, count))

    async def core(statement: sa.Executable, rows: list[dict[str, Any]] | None = None) -> None:
        async with async_db.transaction() as session:
            await session.execute(statement, rows)

    async def driver_sql() -> None:
        async with async_db.connection() as connection:
            await connection.exec_driver_sql(
                f"INSERT INTO masked_accounts (email, password) VALUES ({marks[0]}, {marks[1]})",
                ("d1@x", SECRET),
            )

    paths: dict[str, Callable[[], Any]] = {
        "ORM add": lambda: orm("one", 1),
        "ORM add_all": lambda: orm("orm", 3),
        "Core executemany": lambda: core(sa.insert(Account), _rows("many")),
        "Core executemany RETURNING": lambda: core(
            sa.insert(Account).returning(Account.id), _rows("ret")
        ),
        "Core UPDATE executemany": lambda: core(_update_many(), [{"e": "many0@x", "p": SECRET}]),
        "db.sql INSERT": lambda: async_db.sql(INSERT_TEXT, e="sql@x", p=SECRET),
        "db.sql UPDATE SET": lambda: async_db.sql(
            "UPDATE masked_accounts SET password = :p WHERE email = :e", p=SECRET, e="sql@x"
        ),
        "exec_driver_sql": driver_sql,
    }
    leaks = {}
    try:
        for name, run in paths.items():
            caplog.clear()
            await run()
            if (leak := _leak(caplog.records, name)) is not None:
                leaks[name] = leak
    finally:
        observer.uninstall()
    assert sorted(leaks) == [], leaks  # the paths that showed it


def test_every_row_of_a_multi_row_insert_is_named_by_its_column() -> None:
    rows = ", ".join(f"(${2 * n + 1}::VARCHAR, ${2 * n + 2}::VARCHAR, {n})" for n in range(3))
    asyncpg = (
        "INSERT INTO users (email, password) SELECT p0::VARCHAR, p1::VARCHAR "
        f"FROM (VALUES {rows}) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter "
        "RETURNING users.id, users.id AS id__1"
    )
    assert positional_names(asyncpg) == ["email", "password"] * 3
    psycopg = (
        "INSERT INTO users (email, password) SELECT p0::VARCHAR, p1::VARCHAR FROM (VALUES "
        "(%(email__0)s::VARCHAR, %(pw__0)s::VARCHAR, 0), (%(email__1)s, %(pw__1)s, 1)) "
        "AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter RETURNING users.id"
    )
    assert named_columns(psycopg) == {
        "email__0": "email",
        "pw__0": "password",
        "email__1": "email",
        "pw__1": "password",
    }
    sqlite = "INSERT INTO users (email, password) VALUES (?, ?), (?, ?), (?, ?) RETURNING id"
    assert positional_names(sqlite) == ["email", "password"] * 3
    # the SELECT's items in another order than the alias's columns: each value follows its item
    swapped = (
        "INSERT INTO t (password, email) SELECT p1, p0 FROM (VALUES ($1, $2, 0)) "
        "AS imp_sen(p0, p1, sen_counter)"
    )
    assert positional_names(swapped) == ["email", "password"]


def test_inserted_and_assigned_named_parameters_are_named_by_their_column() -> None:
    assert named_columns("INSERT INTO users (email, password) VALUES (%(e)s, %(p)s)") == {
        "e": "email",
        "p": "password",
    }
    assert named_columns("INSERT INTO users (email, password) VALUES (:e, :p)") == {
        "e": "email",
        "p": "password",
    }
    assert named_columns(
        "UPDATE users SET password = crypt(%(p)s, gen_salt('bf')), n = n + %(k)s WHERE id = %(i)s"
    ) == {"p": "password", "k": "n", "i": "id"}
    assert positional_names(
        "INSERT INTO t (a, password) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET "
        "password = excluded.password || ?"
    ) == ["a", "password", "password"]


def test_a_question_mark_in_a_literal_a_comment_or_a_jsonb_test_is_no_parameter() -> None:
    assert positional_names(
        "INSERT INTO t (note, password) VALUES ('why?', ?) -- who?\n, (/* ? */ 'x', ?)"
    ) == ["password", "password"]
    assert positional_names("UPDATE t SET token = $1 WHERE doc ? 'k' AND id = $2") == [
        "token",
        "id",
    ]


def test_a_case_nests_in_a_set_list_and_a_merge_s_when_ends_it() -> None:
    assert positional_names(
        "UPDATE t SET password = CASE WHEN id = ? THEN ? ELSE password END, n = ? WHERE id = ?"
    ) == ["password id", "password", "n", "id"]
    merge = parameter_columns(
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET email = ? "
        "WHEN NOT MATCHED THEN INSERT VALUES (?, ?)"
    )
    # the INSERT's values are not the SET's email: it names no columns, any may be a secret
    assert merge == ParameterColumns(["email", "", ""], {}, writes_secret=True)


def _logged(
    caplog: pytest.LogCaptureFixture,
    statement: str,
    parameters: Any,
    compiled: list[str] | None = None,
) -> str:
    with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
        SlowQueryLog(0).emit(
            statement,
            parameters,
            0.5,
            positional_names=compiled,
            location="here",
            isolation=None,
            rows=1,
        )
    return caplog.records[-1].getMessage().splitlines()[-1]


@pytest.mark.parametrize(
    ("statement", "parameters", "compiled", "expected"),
    [
        # an INSERT naming no columns may write a secret in any of them
        ("INSERT INTO t VALUES (?, ?)", ("a@x", SECRET), None, "['***', '***']"),
        # more values than the text has parameters: the text's columns may be shifted
        ("INSERT INTO t (email, password) VALUES (?, ?)", ("a", "b", SECRET), None, None),
        # the second SELECT of the UNION is no longer the column list's
        (
            "INSERT INTO t (email, password) SELECT ?, ? UNION ALL SELECT ?, ?",
            ("a@x", SECRET, "b@x", SECRET),
            None,
            "['a@x', '***', '***', '***']",
        ),
        (
            "INSERT INTO t (email, password) SELECT %(e)s, %(p)s UNION ALL SELECT %(f)s, %(q)s",
            {"e": "a@x", "p": SECRET, "f": "b@x", "q": SECRET},
            None,
            "{'e': 'a@x', 'p': '***', 'f': '***', 'q': '***'}",
        ),
        # compiled names that fit no value (an expanding IN) but hold a secret's: the value the
        # text gives no column is masked, those it does show
        (
            "SELECT * FROM t WHERE a IN (?, ?) AND b = lower(?)",
            ("1", "2", SECRET),
            ["a_1", "password_1"],
            "['1', '2', '***']",
        ),
    ],
)
def test_a_value_whose_column_is_unknown_is_masked_in_a_secret_write(
    caplog: pytest.LogCaptureFixture,
    statement: str,
    parameters: Any,
    compiled: list[str] | None,
    expected: str | None,
) -> None:
    shown = _logged(caplog, statement, parameters, compiled)
    assert SECRET not in shown
    assert shown == f"parameters: {expected or ['***'] * len(parameters)}"


def test_a_value_compared_through_a_call_or_a_row_is_masked(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db.create_all(Base.metadata)
    caplog.set_level(logging.WARNING, "dalkit.slow_query")
    observer = install(db.engine, {"slow_query_ms": 0})
    password = Account.password
    statements: list[sa.Executable] = [
        sa.select(Account.id).where(sa.func.lower(password) == SECRET),
        sa.select(Account.id).where(sa.cast(password, sa.String) == SECRET),
        sa.select(Account.id).where(sa.func.lower(password).in_([SECRET, "b"])),
        sa.select(Account.id).where(sa.tuple_(Account.email, password) == ("a@x", SECRET)),
        sa.select(Account.id).where(sa.func.coalesce(password, SECRET) == "x"),
        # a hash of the value compared with the column: pgcrypto's crypt(:pw, password) alike
        sa.text(
            "SELECT id FROM masked_accounts WHERE email = :e AND password = upper(trim(:pw))"
        ).bindparams(e="a@x", pw=SECRET),
    ]
    try:
        with db.connection() as connection:
            for statement in statements:
                caplog.clear()
                connection.execute(statement).all()
                (message,) = [r.getMessage() for r in caplog.records]
                assert SECRET not in message, message
        caplog.clear()
        db.sql("SELECT id FROM masked_accounts WHERE email = lower(:e)", e="A@x")
        assert "'A@x'" in caplog.records[0].getMessage()  # no secret: shown
    finally:
        observer.uninstall()


@pytest.mark.parametrize(
    ("statement", "parameters"),
    [
        (
            "SELECT id FROM users WHERE email = %(e)s "
            "AND password_hash = crypt(%(pw)s, password_hash)",
            {"e": "a@x", "pw": SECRET},
        ),
        (
            "SELECT id FROM keys WHERE api_key_sha = encode(digest($1, 'sha256'), 'hex')",
            [SECRET],
        ),
    ],
)
def test_a_value_hashed_for_a_comparison_is_masked(
    caplog: pytest.LogCaptureFixture, statement: str, parameters: Any
) -> None:
    assert SECRET not in _logged(caplog, statement, parameters)


@pytest.mark.parametrize(
    ("statement", "parameters"),
    [
        ("SELECT id FROM users WHERE ? = password AND email = ?", [SECRET, "a@x"]),
        ("SELECT id FROM users WHERE $1::TEXT = ANY(api_tokens)", [SECRET]),
        ("SELECT id FROM users WHERE %(t)s <> ALL (users.auth_codes)", {"t": SECRET}),
        ("SELECT id FROM users WHERE lower(?) = password_digest", [SECRET]),
        ("SELECT ? AS token", [SECRET]),
    ],
)
def test_a_value_compared_from_the_left_or_selected_as_a_secret_is_masked(
    caplog: pytest.LogCaptureFixture, statement: str, parameters: Any
) -> None:
    # only "password = ?" was read: "? = password" and "? = ANY(tokens)" were shown
    assert SECRET not in _logged(caplog, statement, parameters)


def test_a_value_compared_from_the_left_on_each_database_is_masked(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db.create_all(Base.metadata)
    observer = install(db.engine, {"slow_query_ms": 0})
    try:
        with db.connection() as connection, caplog.at_level(logging.WARNING, "dalkit.slow_query"):
            connection.execute(sa.select(Account.id).where(sa.literal(SECRET) == Account.password))
            connection.execute(sa.select(sa.literal(SECRET).label("api_token")))
            connection.execute(sa.select(Account.id).where(sa.literal("a@x") == Account.email))
        shown = [r.getMessage() for r in caplog.records]
        assert len(shown) == 3
        assert not any(SECRET in message for message in shown)
        assert "a@x" in shown[2]  # no secret: shown
        assert parameter_columns("SELECT CAST(? AS TEXT)").positional == [""]
    finally:
        observer.uninstall()


def test_a_write_of_no_secret_shows_its_values() -> None:
    found = parameter_columns("INSERT INTO t (a, b) SELECT ?, ? UNION ALL SELECT ?, ?")
    assert not found.writes_secret
    assert parameter_columns("UPDATE t SET token = ? WHERE id = ?").writes_secret
    assert parameter_columns("INSERT INTO t VALUES (?)").writes_secret


@pytest.mark.parametrize("sigil", ["$", "@", ":"])
def test_sqlite3s_every_named_parameter_form_is_read(
    caplog: pytest.LogCaptureFixture, sigil: str
) -> None:
    # sqlite3 binds $name and @name as it binds :name; only :name was read as a parameter, so
    # the value compared with password was logged
    statement = f"SELECT id FROM accounts WHERE password = {sigil}p AND email = {sigil}e"
    shown = _logged(caplog, statement, {"p": SECRET, "e": "a@x"})
    assert shown == "parameters: {'p': '***', 'e': 'a@x'}"


#: SQLite reads "$p$" as a parameter named "p$" (a "$" is part of its name), never as the
#: opening of a dollar-quoted literal, PostgreSQL's syntax alone
DOLLAR_NAMES = [
    # the name was read as "p": the value of "p$" went unmasked
    ("SELECT id FROM accounts WHERE password = $p$ AND email = $e$", {"p$": SECRET, "e$": "a@x"}),
    # "$p$ ... $p$" was read as one literal: both parameters and the code between them masked,
    # and the value compared with password named by no column
    ("SELECT id FROM accounts WHERE password = $p$ OR email = $p$", {"p$": SECRET}),
    (
        "SELECT id FROM accounts WHERE email = $e$ AND password = $p AND email = $e$",
        {"p": SECRET, "e$": "a@x"},
    ),
]


@pytest.mark.parametrize(("statement", "parameters"), DOLLAR_NAMES)
def test_a_sqlite_parameter_named_with_a_dollar_is_read_as_sqlite_reads_it(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, statement: str, parameters: dict[str, str]
) -> None:
    with Database(f"sqlite:///{tmp_path / 'a.db'}", slow_query_ms=0) as db:
        db.sql("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT, password TEXT)")
        with caplog.at_level(logging.WARNING, "dalkit.slow_query"), db.connection() as connection:
            connection.exec_driver_sql(statement, parameters).all()
        stats = db.query_stats()
    logged = caplog.records[-1].getMessage().splitlines()
    assert logged[1] == statement  # the code shown as it is: no literal in it
    shown = {name: "***" if value == SECRET else value for name, value in parameters.items()}
    assert logged[-1] == f"parameters: {shown}"
    assert SECRET not in "\n".join(logged)
    assert statement in [s["statement"] for s in stats]
