"""check_raw_write: which tables a raw statement writes, read with sqlparse's tokenizer, and the
refusal of writes to an audited table (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Audited, Database
from dalkit.audit import UnauditedWriteError, check_raw_write
from dalkit.audit.raw import written_tables

from . import models  # noqa: F401  (the audited models must exist)


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("DELETE FROM audit_authors WHERE id = 1", [(None, "audit_authors")]),
        ('update "audit_authors" set name = 1', [(None, "audit_authors")]),
        ("UPDATE public.audit_authors SET name = 'x'", [("public", "audit_authors")]),
        ("INSERT OR REPLACE INTO t VALUES (1)", [(None, "t"), (None, "t")]),
        ("TRUNCATE t, s.u", [(None, "t"), ("s", "u")]),
        ("TRUNCATE ONLY t, ONLY u CASCADE", [(None, "t"), (None, "u")]),
        ("WITH d AS (DELETE FROM t RETURNING id) SELECT * FROM d", [(None, "t")]),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", [(None, "t")]),
        ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", [(None, "t")]),
        ("SELECT * FROM t FOR UPDATE", []),
        ("SELECT 1 /* delete from t */ -- update t set a = 1", []),
        ("SELECT 'delete from t'", []),
        ("SELECT 1; DELETE FROM t", [(None, "t")]),
    ],
)
def test_written_tables_finds_every_table_a_statement_writes(
    sql: str, tables: list[tuple[str | None, str]]
) -> None:
    assert list(written_tables(sql)) == tables


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM audit_authors",
        "delete from AUDIT_AUTHORS where id = 1",
        "UPDATE audit_posts SET deleted_at = NULL",
        "WITH x AS (UPDATE audit_gadgets SET name = 'n' RETURNING id) SELECT * FROM x",
        "TRUNCATE audit_scratch, audit_comments",
        "TRUNCATE audit_scratch, ONLY audit_comments",
    ],
)
def test_raw_writes_to_audited_tables_are_refused(sql: str) -> None:
    with pytest.raises(UnauditedWriteError, match="audited model"):
        check_raw_write(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM audit_authors",
        "SELECT * FROM audit_authors FOR UPDATE",
        "UPDATE audit_scratch SET text = 'x'",
        "INSERT INTO audit_tags (id, label) VALUES (1, 'a')",
    ],
)
def test_reads_and_writes_of_other_tables_pass(sql: str) -> None:
    check_raw_write(sql)


def test_a_same_named_table_of_another_schema_is_not_mistaken_for_the_audited_one(
    tmp_path: Path,
) -> None:
    class AuditedBase(DeclarativeBase):
        pass

    class PlainBase(DeclarativeBase):
        pass

    class AuditedSheet(Audited, AuditedBase):
        __tablename__ = "raw_sheets"
        id: Mapped[int] = mapped_column(primary_key=True)

    class PlainSheet(PlainBase):
        __tablename__ = "raw_sheets"
        id: Mapped[int] = mapped_column(primary_key=True)

    audited_db = Database(f"sqlite:///{tmp_path / 'audited.db'}")
    plain_db = Database(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        audited_db.create_all(AuditedBase.metadata)
        plain_db.create_all(PlainBase.metadata)
        plain_db.sql("INSERT INTO raw_sheets (id) VALUES (1)")  # not the audited schema
        with pytest.raises(UnauditedWriteError):
            audited_db.sql("INSERT INTO raw_sheets (id) VALUES (1)")
    finally:
        audited_db.dispose()
        plain_db.dispose()
