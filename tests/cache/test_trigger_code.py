"""What `trigger_writes` reads from a trigger's code: the targets of its writes, not the
tables it locks or reads, and "anything" when the code decides at run time."""

from __future__ import annotations

import pytest

from dalkit.cache.triggers import ANYTHING, trigger_writes

PLPGSQL = {
    'UPDATE public."Post_Counts" SET n = n + 1 WHERE id = NEW.post_id;': {"post_counts"},
    "INSERT INTO trail AS t (op) VALUES (TG_OP) ON CONFLICT (op) DO UPDATE SET n = t.n + 1;": {
        "trail"
    },
    "DELETE FROM ONLY stale WHERE x IN (SELECT y FROM kept FOR UPDATE);": {"stale"},
    "PERFORM id FROM queue FOR NO KEY UPDATE; PERFORM pg_notify('c', TG_OP);": set(),
    "MERGE INTO target USING source ON true WHEN MATCHED THEN UPDATE SET a = 1 "
    "WHEN NOT MATCHED THEN INSERT (a) VALUES (1);": {"target"},
    "TRUNCATE TABLE ONLY first_one, other.second_one;": {"first_one", "second_one"},
    "IF TG_OP = 'UPDATE' THEN NEW.updated_at := now(); END IF;": set(),
    "SELECT replace(title, 'a', 'b') INTO v FROM books; INSERT INTO \"user\" VALUES (v);": {"user"},
    "REFRESH MATERIALIZED VIEW CONCURRENTLY public.report WITH DATA;": {"report"},
    "NEW.drop := true; NEW.created := now(); INSERT INTO log VALUES ('create table');": {"log"},
}


@pytest.mark.parametrize(("body", "written"), list(PLPGSQL.items()))
def test_a_pl_pgsql_function_writes_the_targets_of_its_statements(
    body: str, written: set[str]
) -> None:
    code = f"DECLARE v text; BEGIN {body} RETURN NEW; END"
    assert trigger_writes("plpgsql", "f", code) == written


@pytest.mark.parametrize(
    "body",
    [
        "EXECUTE format('UPDATE %I SET n = 1', TG_ARGV[0]);",
        "CALL refresh_totals();",
        "PERFORM refresh_totals();",
        "COPY totals FROM '/tmp/totals.csv';",
        "CREATE TABLE IF NOT EXISTS events_2026_12 PARTITION OF events DEFAULT;",
        "DROP TABLE staging;",
        "ALTER TABLE totals ADD COLUMN n integer;",
    ],
)
def test_code_that_decides_at_run_time_or_runs_ddl_may_write_anything(body: str) -> None:
    assert trigger_writes("plpgsql", "f", f"BEGIN {body} RETURN NULL; END") == ANYTHING


def test_a_sqlite_trigger_writes_the_targets_of_its_body_not_its_header() -> None:
    sql = (
        "CREATE TRIGGER t AFTER UPDATE OF title ON books FOR EACH ROW WHEN NEW.id > 1 BEGIN "
        "UPDATE OR IGNORE counts SET n = n + 1; INSERT OR REPLACE INTO log VALUES (1); "
        'REPLACE INTO latest VALUES (NEW.id); DELETE FROM "Old"; SELECT 1; END'
    )
    assert trigger_writes("sqlite", "", sql) == {"counts", "log", "latest", "old"}


@pytest.mark.parametrize(
    ("language", "function", "written"),
    [
        ("internal", "tsvector_update_trigger", frozenset()),
        ("c", "moddatetime", frozenset()),
        ("c", "insert_blocker", frozenset()),  # TimescaleDB's, on every hypertable
        ("c", "some_extension_trigger", ANYTHING),
        ("plpython3u", "audit", ANYTHING),
    ],
)
def test_other_languages_are_known_only_for_the_row_only_builtins(
    language: str, function: str, written: frozenset[str]
) -> None:
    assert trigger_writes(language, function, "whatever") == written


@pytest.mark.parametrize(
    "body",
    ["PERFORM audit.log_row(NEW.id);", "CALL log_row(NEW.id);", "PERFORM log_row (1);"],
)
def test_a_call_for_effects_of_a_function_the_database_defines_is_left_to_its_code(
    body: str,
) -> None:
    code = f"BEGIN {body} INSERT INTO trail VALUES (1); RETURN NEW; END"
    assert trigger_writes("plpgsql", "f", code, defined={"log_row"}) == {"trail"}
    assert trigger_writes("plpgsql", "f", code, defined={"other"}) == ANYTHING
