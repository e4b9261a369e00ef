"""Query statistics per statement shape, and the slow-query log with masked parameters."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, Database
from dalkit.engine.statement_hooks import hooks_for
from dalkit.observe import install, querylog, shapes
from dalkit.observe.param_columns import ParameterColumns, parameter_columns
from dalkit.observe.querylog import (
    QueryStats,
    SlowQueryLog,
    mask_parameters,
    positional_names,
    shape_of,
)

from .models import Post


def test_shapes_ignore_literals_and_parameter_lists() -> None:
    a = shape_of("SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x'")
    b = shape_of("SELECT * FROM t WHERE id IN (7) AND name = 'it''s'")
    c = shape_of("SELECT * FROM t WHERE id IN ($1, $2) AND name = $3")
    assert a.text == b.text == c.text == "SELECT * FROM t WHERE id IN (...) AND name = ?"
    assert a.operation == "SELECT"
    assert shape_of("insert into t values (?, ?), (?, ?)").operation == "INSERT"
    assert shape_of("WITH x AS (SELECT 1) SELECT * FROM x").operation == "SELECT"


def test_the_shape_cache_is_bounded_in_characters_not_only_in_entries() -> None:
    # distinct raw statements with a big literal inline: 2000 of 90 KB kept 200 MB alive
    cached = shapes._shapes
    for n in range(200):
        assert shape_of(f"INSERT INTO docs VALUES ({n}, '{'x' * 90_000}')").operation == "INSERT"
    assert sum(map(len, cached)) <= shapes._CACHE_CHARS
    assert sum(map(len, cached)) == shapes._cached_chars
    shape_of("SELECT 'y' AS " + "z" * (shapes._CACHE_CHARS + 1))  # longer than the bound
    assert sum(map(len, cached)) <= shapes._CACHE_CHARS


def test_a_huge_shape_is_kept_short_and_still_distinct() -> None:
    # a CASE of 10,000 arms shapes to 140 KB; 500 of them, one per batch size, held 69 MB
    def case_update(rows: int, first: str = "?") -> str:
        arms = " ".join(f"WHEN {first if n == 0 else n} THEN 'v{n}'" for n in range(rows))
        return f"UPDATE t SET v = CASE id {arms} END"

    stats = QueryStats()
    for rows in range(10_000, 10_050):
        stats.record(shape_of(case_update(rows)), 0.001, 1)
        stats.record(shape_of(case_update(rows, "7")), 0.001, 1)  # the same shape
    snapshot = stats.snapshot(None)
    assert len(snapshot) == 50  # differing past the kept start, each its own
    assert all(s["count"] == 2 for s in snapshot)
    assert max(len(s["statement"]) for s in snapshot) <= shapes.MAX_SHAPE_CHARS + 60
    assert snapshot[0]["statement"].startswith("UPDATE t SET v = CASE id WHEN ? THEN ? WHEN")
    assert shape_of("SELECT 1 AS " + "x" * 1988).text == "SELECT ? AS " + "x" * 1988  # 2,000


def test_stats_keep_count_time_and_rows_per_shape(seeded_db: Database) -> None:
    observer = install(seeded_db.engine)
    try:
        with seeded_db.session() as session:
            for ident in (1, 2, 3):
                session.get(Post, ident)
            session.execute(sa.select(Post)).all()
        stats = {s["statement"]: s for s in observer.query_stats(top=None)}
        get = next(s for text, s in stats.items() if "WHERE obs_posts.id =" in text)
        assert get["count"] == 3
        assert get["total_ms"] >= get["p95_ms"] >= 0
        assert get["mean_ms"] > 0
        assert get["operation"] == "SELECT"
        popped = observer.pop_query_stats(top=1)
        assert len(popped) == 1
        assert observer.query_stats() == []
    finally:
        observer.uninstall()


def test_the_stats_forget_the_least_recently_run_shapes() -> None:
    stats = QueryStats(max_shapes=2)
    for text in ("SELECT 1 FROM a", "SELECT 1 FROM b", "SELECT 1 FROM a", "SELECT 1 FROM c"):
        stats.record(shape_of(text), 0.001, 1)
    assert sorted(s["statement"] for s in stats.snapshot()) == [
        "SELECT ? FROM a",
        "SELECT ? FROM c",
    ]


def test_resizing_the_statistics_keeps_what_they_gathered(db: Database) -> None:
    # a new query_stats_size (or another setting with the default size) dropped every shape
    observer = install(db.engine)
    try:
        for table in ("a", "b", "c"):
            db.sql(f"SELECT 1 AS {table}")
        install(db.engine, {"query_stats_size": 1000})
        install(db.engine, {"slow_query_ms": 100})  # back to 500 shapes
        assert {s["statement"]: s["count"] for s in observer.query_stats()} == {
            "SELECT ? AS a": 1,
            "SELECT ? AS b": 1,
            "SELECT ? AS c": 1,
        }
        install(db.engine, {"query_stats_size": 2})  # fewer: the least recently run go
        assert sorted(s["statement"] for s in observer.query_stats()) == [
            "SELECT ? AS b",
            "SELECT ? AS c",
        ]
    finally:
        observer.uninstall()


def test_secrets_and_long_values_are_masked() -> None:
    shown = mask_parameters({"password": "hunter2", "api_key": "k", "name": "x" * 500, "n": 1})
    assert shown["password"] == "***"
    assert shown["api_key"] == "***"
    assert shown["name"].endswith("(500 chars)")
    assert len(shown["name"]) < 120
    assert mask_parameters(("hunter2", 5), ["user_password", "id"]) == ["***", 5]


def test_positional_parameters_are_named_by_the_column_they_stand_for() -> None:
    assert positional_names("UPDATE users SET password = ? WHERE id = ?") == ["password", "id"]
    assert positional_names('INSERT INTO t (id, "api_key") VALUES (%s, %s)') == ["id", "api_key"]
    assert positional_names("INSERT INTO t (a, b) VALUES ($2, $1)") == ["b", "a"]
    assert positional_names("SELECT * FROM u WHERE token=$2 AND x IN ($1)") == ["x", "token"]
    assert positional_names("SELECT * FROM u WHERE id = ? AND pass NOT IN (?, ?)") == [
        "id",
        "pass",
        "pass",
    ]
    assert positional_names("SELECT * FROM u WHERE name NOT LIKE ?") == ["name"]
    assert positional_names("INSERT INTO t (a, b) VALUES (?, lower(?))") == ["a", "b"]
    assert positional_names("SELECT 1") == []


def test_sql_sqlalchemy_did_not_compile_is_logged_with_secrets_masked(
    seeded_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    observer = install(seeded_db.engine, {"slow_query_ms": 0})
    mark = "%s" if seeded_db.config.backend == "postgresql" else "?"
    try:
        with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
            with seeded_db.connection() as connection:
                connection.exec_driver_sql(
                    "SELECT * FROM (SELECT 'ada' AS name, 'x' AS token) AS t "
                    f"WHERE name = {mark} AND token = {mark}",
                    ("ada", "hunter2"),
                )
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "['ada', '***']" in text
        assert "hunter2" not in text
    finally:
        observer.uninstall()


def test_a_value_is_masked_by_the_column_it_is_compared_with_too(
    seeded_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # bind names that say nothing ("pw", "n"), an expanding IN before a secret: the column says
    statement = sa.text(
        "SELECT * FROM (SELECT 'a' AS password, 'b' AS api_key, 1 AS id) AS t "
        "WHERE id IN :n AND password IN :pw AND api_key = :k"
    ).bindparams(sa.bindparam("n", expanding=True), sa.bindparam("pw", expanding=True))
    observer = install(seeded_db.engine, {"slow_query_ms": 0})
    try:
        with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
            with seeded_db.session() as session:
                values = {"n": [1, 2, 3], "pw": ["hunter1", "hunter2"], "k": "x9"}
                session.execute(statement, values)
        (text,) = [r.getMessage() for r in caplog.records if "api_key = " in r.getMessage()]
        assert "hunter" not in text
        assert "x9" not in text
        assert "1, 2, 3" in text or "'n_1': 1" in text  # the harmless values still show
    finally:
        observer.uninstall()


async def test_an_async_psycopg_copy_is_observed(postgres_database_url: str) -> None:
    from .test_bulk_observed_async import Base as BulkBase
    from .test_bulk_observed_async import Readings

    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    async with AsyncDatabase(url.render_as_string(hide_password=False)) as db:
        await db.create_all(BulkBase.metadata)
        observer = install(db.engine)
        async with db.transaction() as session:
            await Readings(session).bulk_insert([{"id": n, "secret_note": "x"} for n in (1, 2)])
        (copy,) = [s for s in observer.query_stats(top=None) if s["operation"] == "COPY"]
    assert copy["statement"].startswith("COPY observed_readings (id, secret_note) FROM STDIN")
    assert copy["rows"] == 2


def test_the_slow_log_cuts_long_parameter_sets_and_list_values(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    observer = install(db.engine, {"slow_query_ms": 0})
    ids: sa.BindParameter[list[int]] = sa.bindparam("ids", expanding=True)
    try:
        with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
            with db.transaction() as session:  # one parameter per value: 30,000 of them
                session.execute(
                    sa.text("SELECT :one AS one WHERE 1 IN :ids").bindparams(ids),
                    {"one": 1, "ids": list(range(30_000))},
                )
        (text,) = [r.getMessage() for r in caplog.records if "AS one" in r.getMessage()]
    finally:
        observer.uninstall()
    assert len(text) < 10_000  # 200 KB before: every value of the IN
    assert "more" in text
    assert mask_parameters({"ids": list(range(50))}) == {"ids": [*range(20), "... 30 more items"]}
    assert mask_parameters({"ids": list(range(50)), "password": ["hunter2"]})["password"] == "***"


@pytest.mark.slow
def test_a_slow_query_is_logged_with_its_line_and_masked_password(
    seeded_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    observer = install(seeded_db.engine, {"slow_query_ms": 100})
    if seeded_db.config.backend == "sqlite":
        statement = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) "
            "SELECT count(*) FROM n WHERE :password IS NOT NULL"
        )
    else:
        statement = "SELECT pg_sleep(0.3) WHERE CAST(:password AS text) IS NOT NULL"
    try:
        with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
            seeded_db.sql("SELECT 1 AS fast")
            seeded_db.sql(statement, password="hunter2")  # the slow line
        (record,) = caplog.records
        text = record.getMessage()
        assert record.name == "dalkit.slow_query"
        assert record.duration_ms >= 100  # type: ignore[attr-defined]
        with open(__file__) as source:
            line = next(n for n, s in enumerate(source, 1) if "# the slow line" in s)
        assert f"test_querylog.py:{line}" in text
        assert "hunter2" not in text
        assert "'***'" in text
        assert observer.slow_log is not None
        assert observer.slow_log.count == 1
    finally:
        observer.uninstall()


async def test_async_statements_are_counted_by_the_same_listeners(
    async_db: AsyncDatabase,
) -> None:
    observer = install(async_db.engine)
    try:
        for _ in range(3):
            await async_db.sql("SELECT 1 AS one")
        (stat,) = [s for s in observer.query_stats() if s["statement"] == "SELECT ? AS one"]
        assert stat["count"] == 3
    finally:
        observer.uninstall()


def test_nothing_is_installed_when_everything_is_off(db: Database) -> None:
    engine = db.engine
    observer = install(engine, {"query_stats": False, "nplusone": "off"})
    hooks = hooks_for(engine.dialect)
    try:
        assert not observer.listening
        assert observer._after not in hooks.timers
        observer.enable_metrics()
        assert observer.listening
        assert observer._after in hooks.timers
    finally:
        observer.uninstall()
    assert observer._after not in hooks.timers


def test_the_slow_query_log_names_the_request_and_actor(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    from dalkit.audit import actor

    observer = install(db.engine, {"slow_query_ms": 0})
    try:
        with (
            caplog.at_level(logging.WARNING, logger="dalkit.slow_query"),
            actor("user-7", "req-42"),
        ):
            db.sql("SELECT 1 AS one")
        record = next(r for r in caplog.records if "SELECT 1 AS one" in r.getMessage())
        assert "request req-42, actor user-7" in record.getMessage()
        assert record.request_id == "req-42"  # type: ignore[attr-defined]
        assert "isolation " in record.getMessage()
    finally:
        observer.uninstall()


def _logged(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    statement: str,
    parameters: object,
) -> str:
    caplog.clear()
    read: list[str] = []

    def reading(text: str) -> ParameterColumns:
        read.append(text)
        return parameter_columns(text)

    monkeypatch.setattr(querylog, "parameter_columns", reading)
    with caplog.at_level(logging.WARNING, logger="dalkit.slow_query"):
        SlowQueryLog(0).emit(
            statement, parameters, 0.5, positional_names=None, location="x", isolation=None, rows=1
        )
    (message,) = [record.getMessage() for record in caplog.records]
    # reading the column of every parameter took 20-50 us a parameter: 4-10 s for these; none
    # of them is read now (no secret named, or too long to read: all masked)
    assert read == []
    return message


def test_logging_a_huge_slow_statement_reads_no_more_of_it_than_it_shows(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 200_000
    marks = ", ".join("?" for _ in range(count))
    shown = _logged(
        caplog, monkeypatch, f"SELECT * FROM t WHERE id IN ({marks})", tuple(range(count))
    )
    assert "[0, 1, 2," in shown
    assert f"... {count - 100} more" in shown
    rows = ", ".join("(?, ?)" for _ in range(count // 2))
    shown = _logged(
        caplog,
        monkeypatch,
        f"INSERT INTO users (email, password) VALUES {rows}",
        ("a@x", "hunter2") * (count // 2),
    )
    assert "hunter2" not in shown
    literals = ", ".join(f"({n}, 'hunter{n}')" for n in range(count // 4))
    shown = _logged(caplog, monkeypatch, f"INSERT INTO users (id, password) VALUES {literals}", ())
    assert "hunter" not in shown
    assert "'***'" in shown
    assert len(shown.splitlines()[1]) == 2000
