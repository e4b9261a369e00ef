"""Index advice on a schema built to have each problem, and none on a clean schema."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import Database
from dalkit.observe import IndexAdvice, Observer, explain, index_advice, install
from dalkit.testing import PostgresServer

from .schema import (
    BigRows,
    Clean,
    Item,
    Shop,
    build_problems,
    run_problem_workload,
    wait_for_stats,
)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    database = Database(url.render_as_string(hide_password=False))
    try:
        yield database
    finally:
        database.dispose()


def _by_kind(advice: list[IndexAdvice]) -> dict[str, list[IndexAdvice]]:
    found: dict[str, list[IndexAdvice]] = {}
    for item in advice:
        found.setdefault(item.kind, []).append(item)
    return found


@pytest.mark.slow
def test_each_problem_is_advised_with_its_ddl(pg_db: Database) -> None:
    build_problems(pg_db)
    observer = install(pg_db.engine)
    try:
        run_problem_workload(pg_db)
        with pg_db.connection() as conn:
            advice = _by_kind(index_advice(conn, observer, repositories=[BigRows]))
    finally:
        observer.uninstall()
    (fk,) = advice["missing_fk_index"]
    assert (fk.table, fk.columns) == ("adv_orders", ("customer_id",))
    assert (
        fk.ddl == "CREATE INDEX CONCURRENTLY ix_adv_orders_customer_id ON adv_orders (customer_id)"
    )
    (duplicate,) = advice["duplicate_index"]
    assert duplicate.ddl == "DROP INDEX CONCURRENTLY ix_events_kind_b"
    assert duplicate.evidence == {"index": "ix_events_kind_b", "covered_by": "ix_events_kind_a"}
    unused = {a.evidence["index"]: a for a in advice["unused_index"]}
    assert unused["ix_events_created"].ddl == "DROP INDEX CONCURRENTLY ix_events_created"
    assert unused["ix_events_created"].severity == "info"
    (scan,) = advice["unindexed_filter"]
    assert (scan.table, scan.columns) == ("adv_big", ("code",))
    assert scan.ddl == "CREATE INDEX CONCURRENTLY ix_adv_big_code ON adv_big (code)"
    assert scan.evidence["seq_scans"] >= 25
    assert scan.evidence["rows"] >= 150_000
    assert scan.evidence["repositories"] == ["BigRows"]
    assert any("adv_big.code =" in s for s in scan.evidence["statements"])
    assert "pg_stat_statements" not in scan.evidence  # the extension is not loaded here


@pytest.mark.slow
def test_explain_warns_of_the_seq_scan_until_the_advised_index_exists(pg_db: Database) -> None:
    build_problems(pg_db)
    query = sa.text("SELECT id FROM adv_big WHERE code = :code")
    with pg_db.connection() as conn:
        before = explain(conn, query.bindparams(code=42))
        analyzed = explain(
            conn, "SELECT id FROM adv_big WHERE code = :code", {"code": 42}, analyze=True
        )
    assert before.has_warning("seq_scan")
    assert analyzed.has_warning("seq_scan")
    assert "adv_big" in before.text
    assert "Seq Scan" in before.text
    assert analyzed.analyzed
    assert "actual rows" in analyzed.text
    with pg_db.connection() as conn:
        conn.execute(sa.text("CREATE INDEX ix_adv_big_code ON adv_big (code)"))
        conn.execute(sa.text("ANALYZE adv_big"))
    with pg_db.connection() as conn:
        after = explain(conn, query.bindparams(code=42))
    assert after.warnings == ()
    assert "ix_adv_big_code" in after.text


def test_explain_analyze_of_a_write_is_rolled_back(pg_db: Database) -> None:
    pg_db.create_all(Clean.metadata)
    with pg_db.connection() as conn:
        plan = explain(conn, sa.insert(Shop).values(name="ghost"), analyze=True)
    assert plan.data[0]["Plan"]["Node Type"] == "ModifyTable"
    with pg_db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Shop)) == 0


def test_a_clean_schema_gets_no_advice(db: Database) -> None:
    db.create_all(Clean.metadata)
    observer = install(db.engine)
    try:
        with db.session() as session:
            session.add(Shop(id=1, name="corner"))
            session.flush()
            session.add_all(Item(shop_id=1) for _ in range(10))
        for _ in range(60):
            with db.session() as session:
                session.execute(sa.select(Item).where(Item.shop_id == 1)).all()
                session.execute(sa.select(Shop).where(Shop.name == "corner")).all()
        with db.connection() as conn:
            advice = index_advice(conn, observer, repositories=[])
    finally:
        observer.uninstall()
    assert [a for a in advice if a.table.startswith("clean_")] == []


def test_sqlite_reports_foreign_keys_duplicates_and_filters_seen(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    metadata = sa.MetaData()
    parent = sa.Table("p", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "c",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("p_id", sa.ForeignKey(parent.c.id)),
        sa.Column("tag", sa.String(10)),
        sa.Index("ix_c_tag_p", "tag", "p_id"),
        sa.Index("ix_c_tag", "tag"),
    )
    observer: Observer = install(db.engine)
    try:
        db.create_all(metadata)
        with db.connection() as conn:
            conn.execute(sa.text("INSERT INTO p (id) VALUES (1)"))
            conn.execute(
                sa.text(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
                    "INSERT INTO c (id, p_id, tag) SELECT i, 1, 't' FROM n"
                )
            )
            conn.execute(sa.text("SELECT id FROM c WHERE c.p_id = :p"), {"p": 1}).all()
            advice = _by_kind(index_advice(conn, observer, repositories=[], min_rows=100))
    finally:
        observer.uninstall()
        db.dispose()
    (fk,) = advice["missing_fk_index"]
    assert fk.ddl == "CREATE INDEX ix_c_p_id ON c (p_id)"
    (redundant,) = advice["duplicate_index"]
    assert redundant.ddl == "DROP INDEX ix_c_tag"
    assert "is a prefix of ix_c_tag_p" in redundant.reason
    (filtered,) = advice["unindexed_filter"]
    assert filtered.columns == ("p_id",)
    assert filtered.evidence["rows"] == 200


def test_an_index_serving_other_lookups_is_no_duplicate(db: Database) -> None:
    # a partial index serves only the statements that repeat its WHERE; on PostgreSQL a hash or
    # text_pattern_ops index, or one with INCLUDE columns, serves lookups a plain one does not
    statements = [
        "CREATE TABLE owners_dup (id INTEGER PRIMARY KEY)",
        "CREATE TABLE docs_dup (id INTEGER PRIMARY KEY, status VARCHAR(10), name VARCHAR(10), "
        "owner_id INTEGER REFERENCES owners_dup (id), deleted_at INTEGER)",
        "CREATE INDEX ix_dup_a_status_live ON docs_dup (status) WHERE deleted_at IS NULL",
        "CREATE INDEX ix_dup_b_status ON docs_dup (status)",
        "CREATE INDEX ix_dup_owner_live ON docs_dup (owner_id) WHERE deleted_at IS NULL",
    ]
    if db.engine.dialect.name == "postgresql":
        statements += [
            "CREATE INDEX ix_dup_name_hash ON docs_dup USING hash (name)",
            "CREATE INDEX ix_dup_name_pattern ON docs_dup (name varchar_pattern_ops)",
            "CREATE INDEX ix_dup_name_with_id ON docs_dup (name) INCLUDE (id)",
            "CREATE INDEX ix_dup_name ON docs_dup (name)",
        ]
    for statement in statements:
        db.sql(statement)
    with db.connection() as conn:
        advice = _by_kind(index_advice(conn, repositories=[]))
    # the full status index serves the partial one's lookups, not the other way round; the
    # plain name index is redundant beside the one that also includes id
    expected = ["ix_dup_a_status_live"]
    expected += ["ix_dup_name"] if db.engine.dialect.name == "postgresql" else []
    assert [a.evidence["index"] for a in advice.get("duplicate_index", [])] == expected
    # the partial index on owner_id does not serve the foreign key's lookups
    (fk,) = advice["missing_fk_index"]
    assert (fk.table, fk.columns) == ("docs_dup", ("owner_id",))


@pytest.mark.slow
@pytest.mark.postgres
def test_pg_stat_statements_supplies_the_statements_when_loaded() -> None:
    # a server of its own: loading the extension takes a restart
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        server.restart()
        db = Database(_psycopg(server.create_database("pss")))
        try:
            db.sql("CREATE EXTENSION pg_stat_statements")
            db.sql(
                "CREATE TABLE pss_big AS SELECT n AS id, n % 500 AS code "
                "FROM generate_series(1, 20000) AS n"
            )
            db.sql("ANALYZE pss_big")
            big = sa.table("pss_big", sa.column("id"), sa.column("code"))
            with db.connection() as conn:
                for code in range(25):
                    conn.execute(sa.select(big.c.id).where(big.c.code == code)).all()
            db.dispose()
            wait_for_stats(db, "pss_big", 25)
            with db.connection() as conn:
                (advice,) = index_advice(conn, None, repositories=[])
        finally:
            db.dispose()
    assert (advice.kind, advice.columns) == ("unindexed_filter", ("code",))
    assert "statements" not in advice.evidence
    (seen,) = advice.evidence["pg_stat_statements"]
    assert "pss_big.code = $1" in seen


def _psycopg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
