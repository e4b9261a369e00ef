"""Plain ``.sql`` revisions on PostgreSQL: the docs' CREATE/DROP INDEX CONCURRENTLY example runs
outside the transaction as op.create_index_concurrently does (an INVALID leftover dropped
first, and a lock timeout after it retried: the build runs again with IF NOT EXISTS), and
statement splitting keeps E'...' strings with backslash escapes whole."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import Database
from dalkit.migrations import Migrations, MigrationSettings
from dalkit.migrations.sql_files import split_statements

from .project import lock_held

ORDERS = """-- revision: 3f2a9d8e1c44
-- down_revision: none
-- message: orders
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint);
INSERT INTO orders VALUES (1, 10), (2, 20);
-- down
DROP TABLE orders;
"""
# docs/migrations.md, word for word
BY_CUSTOMER = """-- revision: 9c1f3e2a7b10
-- down_revision: 3f2a9d8e1c44
-- message: orders by customer
CREATE INDEX CONCURRENTLY ix_orders_customer ON orders (customer_id);
-- down
DROP INDEX CONCURRENTLY ix_orders_customer;
"""
INDEXES = sa.text(
    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = 'ix_orders_customer'"
)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Database:
    return Database(make_url(postgres_database_url).set(drivername="postgresql+psycopg"))


def _write(directory: Path, *files: tuple[str, str]) -> None:
    (directory / "versions").mkdir(parents=True)
    for name, text in files:
        (directory / "versions" / name).write_text(text)


def _indexes(db: Database) -> list[tuple[str, bool]]:
    with db.engine.connect() as connection:
        return [(row[0], row[1]) for row in connection.execute(INDEXES)]


def test_the_docs_concurrent_index_example_runs_on_postgresql(
    pg_db: Database, directory: Path
) -> None:
    _write(directory, ("3f2a_orders.sql", ORDERS), ("9c1f_by_customer.sql", BY_CUSTOMER))
    migrations = Migrations(pg_db, directory)
    assert migrations.lint() == []
    assert migrations.upgrade().applied == ["3f2a9d8e1c44", "9c1f3e2a7b10"]
    assert _indexes(pg_db) == [("ix_orders_customer", True)]
    assert migrations.downgrade("-1").applied == ["9c1f3e2a7b10"]
    assert _indexes(pg_db) == []
    # the offline script a DBA would run leaves the transaction for the build, too
    script = migrations.sql("3f2a9d8e1c44:9c1f3e2a7b10")
    assert "COMMIT;\n\nCREATE INDEX CONCURRENTLY ix_orders_customer" in script
    pg_db.dispose()


def test_an_invalid_leftover_of_a_failed_build_is_dropped_first(
    pg_db: Database, directory: Path, postgres_database_url: str
) -> None:
    unique = BY_CUSTOMER.replace("CREATE INDEX", "CREATE UNIQUE INDEX")
    _write(directory, ("3f2a_orders.sql", ORDERS), ("9c1f_by_customer.sql", unique))
    migrations = Migrations(pg_db, directory)
    migrations.upgrade("3f2a9d8e1c44")
    with psycopg.connect(postgres_database_url, autocommit=True) as connection:
        connection.execute("INSERT INTO orders VALUES (3, 10)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            connection.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY ix_orders_customer ON orders (customer_id)"
            )
        connection.execute("DELETE FROM orders WHERE id = 3")
    assert _indexes(pg_db) == [("ix_orders_customer", False)]
    assert migrations.upgrade().applied == ["9c1f3e2a7b10"]
    assert _indexes(pg_db) == [("ix_orders_customer", True)]
    pg_db.dispose()


@pytest.mark.slow  # a blocker held for a second, so the revision's lock times out and retries
def test_a_lock_timeout_after_the_concurrent_index_first_in_its_revision_is_retried(
    pg_db: Database, directory: Path, postgres_database_url: str
) -> None:
    # the docs' advice: a concurrent index first in its revision; the build commits, then the
    # ALTER times out behind a reader: the retry runs the build again, which gets past it
    then_alter = BY_CUSTOMER.replace(
        "\n-- down\n", "\nALTER TABLE orders ADD COLUMN qty int;\n-- down\n"
    )
    _write(directory, ("3f2a_orders.sql", ORDERS), ("9c1f_by_customer.sql", then_alter))
    settings = MigrationSettings(
        lock_timeout_ms=100, lock_retries=20, retry_backoff_s=0.05, retry_backoff_max_s=0.2
    )
    migrations = Migrations(pg_db, directory, settings=settings)
    migrations.upgrade("3f2a9d8e1c44")
    with lock_held(postgres_database_url, "SELECT * FROM orders"):  # a reader's ACCESS SHARE
        assert migrations.upgrade().applied == ["9c1f3e2a7b10"]
    assert _indexes(pg_db) == [("ix_orders_customer", True)]
    pg_db.dispose()


@pytest.mark.parametrize(
    "reindex", ["REINDEX TABLE CONCURRENTLY orders", "REINDEX (CONCURRENTLY) TABLE orders"]
)
def test_a_concurrent_reindex_runs_outside_the_transaction_in_either_spelling(
    pg_db: Database, directory: Path, reindex: str
) -> None:
    rebuilt = f"-- revision: r1\n-- down_revision: 3f2a9d8e1c44\n{reindex};\n-- down\nSELECT 1;\n"
    _write(directory, ("3f2a_orders.sql", ORDERS), ("r1_reindex.sql", rebuilt))
    migrations = Migrations(pg_db, directory)
    assert migrations.lint() == []
    assert migrations.upgrade().applied == ["3f2a9d8e1c44", "r1"]
    pg_db.dispose()


def test_escape_strings_keep_their_quotes_and_semicolons(pg_db: Database, directory: Path) -> None:
    notes = (
        "-- revision: e1\n-- down_revision: none\n-- message: notes\n"
        "CREATE TABLE escaped_notes (id bigint PRIMARY KEY, t text);\n"
        "INSERT INTO escaped_notes VALUES (1, E'it\\'s; fine'), (2, e'a\\\\'), (3, 'b\\');\n"
        "-- down\nDROP TABLE escaped_notes;\n"
    )
    assert len(split_statements(notes.partition("\n-- down\n")[0])) == 2
    _write(directory, ("e1_notes.sql", notes))
    Migrations(pg_db, directory).upgrade()
    with pg_db.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, t FROM escaped_notes ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [(1, "it's; fine"), (2, "a\\"), (3, "b\\")]
    pg_db.dispose()


def test_only_an_e_prefix_makes_backslashes_escapes() -> None:
    sql = "SELECT 'a\\'; SELECT type'x\\'; SELECT E'y\\';z'"
    assert split_statements(sql) == ["SELECT 'a\\'", "SELECT type'x\\'", "SELECT E'y\\';z'"]
