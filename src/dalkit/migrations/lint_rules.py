"""The lint rules (modelled on squawk and strong_migrations): what each flags and its safe recipe,
checked on Alembic operation objects and on raw SQL. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.ddl.postgresql import CreateExcludeConstraintOp
from alembic.operations import ops

from dalkit.migrations.sql_files import split_statements

__all__ = ["RULES", "RevisionState", "Rule", "check_operation", "check_sql"]


@dataclass(frozen=True)
class Rule:
    """One lint rule: its id, what is wrong, and the safe way to do it."""

    id: str
    problem: str
    recipe: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "adding-not-nullable-field",
            "adding a NOT NULL column without a default rewrites or fails on a non-empty table",
            "add it nullable (or with a constant server_default), backfill in batches, then "
            "add a CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, and SET NOT NULL",
        ),
        Rule(
            "adding-volatile-default",
            "a volatile default (random(), gen_random_uuid(), clock_timestamp()...), or a value "
            "made for each row (an identity, serial or stored generated column), rewrites the "
            "whole table under an ACCESS EXCLUSIVE lock",
            "add the column without a default, set the default, then backfill in batches",
        ),
        Rule(
            "changing-column-type",
            "changing a column's type rewrites the table and its indexes under an ACCESS "
            "EXCLUSIVE lock, and breaks running code",
            "add a new column, write to both, backfill, switch reads, then drop the old one",
        ),
        Rule(
            "renaming-column",
            "renaming a column breaks the running application's queries",
            "add the new column, write to both, backfill, move readers, then drop the old one",
        ),
        Rule(
            "renaming-table",
            "renaming a table breaks the running application's queries",
            "create the new table (or a view under the new name), migrate readers, then drop",
        ),
        Rule(
            "dropping-column",
            "dropping a column breaks running code that still selects it",
            "stop using it in code first (deploy), then drop it in a later release "
            "under safety_assured",
        ),
        Rule(
            "dropping-table",
            "dropping a table loses data and breaks running code that reads it",
            "stop using it in code first (deploy), back it up, then drop it under safety_assured",
        ),
        Rule(
            "require-concurrent-index-creation",
            "CREATE INDEX on an existing table blocks writes for the whole build",
            "op.create_index_concurrently(name, table, columns) (runs outside the transaction)",
        ),
        Rule(
            "require-concurrent-index-deletion",
            "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table",
            "op.drop_index_concurrently(name, table)",
        ),
        Rule(
            "require-concurrent-reindex",
            "REINDEX without CONCURRENTLY blocks the table's writes, and reads that use an index "
            "it rebuilds (ACCESS EXCLUSIVE on each index), for the whole rebuild",
            "REINDEX INDEX (or TABLE) CONCURRENTLY name (PostgreSQL 12+; a .sql revision runs "
            "it outside the transaction, a Python one inside op.get_context().autocommit_block())",
        ),
        Rule(
            "vacuum-full-or-cluster",
            "VACUUM FULL and CLUSTER rewrite the whole table under an ACCESS EXCLUSIVE lock, "
            "blocking its reads and writes for the rewrite (and needing its size again on disk)",
            "plain VACUUM (it blocks no reads or writes), or pg_repack, which rebuilds or "
            "reorders the table online, outside the migration",
        ),
        Rule(
            "setting-tablespace",
            "SET TABLESPACE copies the whole table (or index) under an ACCESS EXCLUSIVE lock, "
            "blocking its reads and writes for the copy",
            "pg_repack --tablespace, which moves it online, outside the migration; or create "
            "new indexes in the tablespace CONCURRENTLY and drop the old ones",
        ),
        Rule(
            "adding-exclusion-constraint",
            "ADD CONSTRAINT ... EXCLUDE builds its index scanning the whole table under an "
            "ACCESS EXCLUSIVE lock; it can be neither NOT VALID nor built USING INDEX",
            "add it when the table is created; on an existing table, where a UNIQUE constraint "
            "can say the same build that from a concurrent index, else add it in a quiet hour "
            "under safety_assured",
        ),
        Rule(
            "constraint-missing-not-valid",
            "adding a FOREIGN KEY or CHECK constraint scans the table under a blocking lock",
            "add it with postgresql_not_valid=True (NOT VALID), then VALIDATE CONSTRAINT in a "
            "later revision; one added with its column cannot be NOT VALID: add the column "
            "first, then the constraint",
        ),
        Rule(
            "disallowed-unique-constraint",
            "ADD CONSTRAINT ... UNIQUE (or PRIMARY KEY) builds its index under an ACCESS "
            "EXCLUSIVE lock",
            "op.create_index_concurrently(name, table, cols, unique=True), then "
            "ALTER TABLE t ADD CONSTRAINT name UNIQUE (or PRIMARY KEY) USING INDEX name",
        ),
        Rule(
            "setting-not-null",
            "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
            "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then SET NOT NULL "
            "(PostgreSQL 12+ skips the scan), then drop the CHECK",
        ),
        Rule(
            "enum-value-removed",
            "removing or renaming an enum value breaks rows and code that use it",
            "add the new value, migrate rows and code, and stop writing the old one; keep it",
        ),
        Rule(
            "prefer-bigint-pk",
            "an int primary key runs out at 2^31 and widening it later rewrites the table",
            "use sa.BigInteger (or an identity bigint) for primary keys",
        ),
        Rule(
            "prefer-timestamptz",
            "timestamp without time zone loses the offset and misleads across zones",
            "use sa.DateTime(timezone=True) (timestamptz)",
        ),
        Rule(
            "missing-lock-timeout",
            "without lock_timeout a blocked ALTER queues every later query on the table",
            "keep dalkit's lock_timeout (MigrationSettings.lock_timeout_ms); do not reset it",
        ),
    )
}

_VOLATILE = re.compile(
    r"\b(random|gen_random_uuid|uuid_generate_v\d\w*|clock_timestamp|timeofday|nextval|"
    r"statement_timestamp)\s*\(",
    re.IGNORECASE,
)


@dataclass
class RevisionState:
    """What a revision did so far: tables it created, whether it validated a constraint."""

    new_tables: set[str] = field(default_factory=set)
    validated: bool = False


def check_operation(operation: Any, state: RevisionState) -> Iterator[str]:
    """Rule ids ``operation`` (an Alembic MigrateOperation) breaks."""
    if isinstance(operation, ops.CreateTableOp):
        state.new_tables.add(operation.table_name)
        for column in operation.columns:
            if isinstance(column, sa.Column):
                yield from _column_types(column)
    elif isinstance(operation, ops.AddColumnOp):
        yield from _added_column(operation.column, operation.table_name in state.new_tables)
    elif isinstance(operation, ops.AlterColumnOp):
        yield from _altered_column(operation, state)
    elif isinstance(operation, ops.DropColumnOp):
        yield "dropping-column"
    elif isinstance(operation, ops.DropTableOp):
        if operation.table_name not in state.new_tables:
            yield "dropping-table"
    elif isinstance(operation, ops.RenameTableOp):
        yield "renaming-table"
    elif isinstance(operation, ops.CreateIndexOp):
        if operation.table_name not in state.new_tables and not _concurrent(operation):
            yield "require-concurrent-index-creation"
    elif isinstance(operation, ops.DropIndexOp):
        if not _concurrent(operation):
            yield "require-concurrent-index-deletion"
    elif isinstance(operation, ops.CreateForeignKeyOp | ops.CreateCheckConstraintOp):
        table = getattr(operation, "source_table", None) or getattr(operation, "table_name", "")
        if table not in state.new_tables and not operation.kw.get("postgresql_not_valid"):
            yield "constraint-missing-not-valid"
    elif isinstance(operation, ops.CreateUniqueConstraintOp | ops.CreatePrimaryKeyOp):
        if operation.table_name not in state.new_tables:
            yield "disallowed-unique-constraint"
    elif isinstance(operation, CreateExcludeConstraintOp):
        if operation.table_name not in state.new_tables:
            yield "adding-exclusion-constraint"
    elif isinstance(operation, ops.ExecuteSQLOp):
        sqltext = operation.sqltext
        yield from check_sql(sqltext if isinstance(sqltext, str) else str(sqltext), state)


def _concurrent(operation: ops.CreateIndexOp | ops.DropIndexOp) -> bool:
    return bool(getattr(operation, "concurrent", False)) or bool(
        operation.kw.get("postgresql_concurrently", False)
    )


def _column_types(column: sa.Column[Any]) -> Iterator[str]:
    column_type = _unwrap(column.type)
    integer = isinstance(column_type, sa.Integer) and not isinstance(column_type, sa.BigInteger)
    if column.primary_key and integer:
        yield "prefer-bigint-pk"
    if isinstance(column_type, sa.DateTime) and not column_type.timezone:
        yield "prefer-timestamptz"


def _added_column(column: sa.Column[Any], new_table: bool) -> Iterator[str]:
    yield from _column_types(column)
    if new_table:
        return
    default = column.server_default
    generated = column.identity is not None or column.computed is not None
    if not column.nullable and default is None and not generated:
        yield "adding-not-nullable-field"
    volatile = default is not None and _VOLATILE.search(_default_text(default)) is not None
    if volatile or generated:  # PostgreSQL computes an identity or generated value per row
        yield "adding-volatile-default"
    # ADD COLUMN ... REFERENCES/CHECK is validated at once (a column constraint cannot be NOT
    # VALID), and a foreign key takes SHARE ROW EXCLUSIVE on the referenced table, blocking
    # its writers for as long as the ALTER waits for its own ACCESS EXCLUSIVE lock and runs
    checks = [c for c in column.constraints if isinstance(c, sa.CheckConstraint)]
    if column.foreign_keys or checks:
        yield "constraint-missing-not-valid"


def _altered_column(operation: ops.AlterColumnOp, state: RevisionState) -> Iterator[str]:
    if operation.table_name in state.new_tables:
        return
    if operation.modify_name is not None:
        yield "renaming-column"
    new_type = operation.modify_type
    if new_type is not None:
        old_type = operation.existing_type  # an argument of its own, never in kw
        if isinstance(new_type, sa.Enum) and isinstance(old_type, sa.Enum):
            if set(old_type.enums) - set(new_type.enums):
                yield "enum-value-removed"
        else:
            yield "changing-column-type"
        if isinstance(_unwrap(new_type), sa.DateTime) and not _unwrap(new_type).timezone:
            yield "prefer-timestamptz"
    if operation.modify_nullable is False and not state.validated:
        yield "setting-not-null"


def _unwrap(column_type: Any) -> Any:
    return getattr(column_type, "impl_instance", column_type)


def _default_text(default: Any) -> str:
    arg = getattr(default, "arg", default)
    return arg if isinstance(arg, str) else str(getattr(arg, "text", arg))


_NAME = r'"?([\w.]+)"?'
_SQL_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (rule, re.compile(pattern, re.IGNORECASE | re.DOTALL))
    for rule, pattern in (
        (
            "adding-volatile-default",
            r"\bADD\s+(COLUMN\s+)?\S+\s+[^;]*\bDEFAULT\b[^;]*"
            + _VOLATILE.pattern
            # a value made for each row: serial, identity, stored generated
            + r"|\bADD\s+(COLUMN\s+)?\S+\s+((SMALL|BIG)?SERIAL[248]?\b"
            r"|[^;]*\bGENERATED\b[^;]*\b(IDENTITY|STORED)\b)",
        ),
        ("changing-column-type", r"\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b"),
        (
            "renaming-column",
            # COLUMN is optional: ALTER TABLE t RENAME old TO new
            r"\bRENAME\s+COLUMN\b|\bALTER\s+TABLE\s+(IF\s+EXISTS\s+)?(ONLY\s+)?\S+\s+RENAME\s+"
            r"(?!(TO|CONSTRAINT)\b)\S+\s+TO\b",
        ),
        ("renaming-table", r"\bALTER\s+TABLE\s+(IF\s+EXISTS\s+)?\S+\s+RENAME\s+TO\b"),
        (
            "dropping-column",
            # COLUMN is optional: ALTER TABLE t DROP [IF EXISTS] col
            r"\bDROP\s+COLUMN\b|\bALTER\s+TABLE\b[^;]*\bDROP\s+(IF\s+EXISTS\s+)?"
            r"(?!(CONSTRAINT|DEFAULT|NOT|EXPRESSION|IDENTITY|IF)\b)[\"\w]",
        ),
        (
            "require-concurrent-reindex",
            # REINDEX SYSTEM has no CONCURRENTLY; CONCURRENTLY may be an option: (CONCURRENTLY)
            r"(^|;)\s*REINDEX\b(?!\s*(\([^)]*\)\s*)?SYSTEM\b)"
            r"(?![^;]*\bCONCURRENTLY\b(?!\s+(FALSE|OFF|0)\b))",
        ),
        (
            "vacuum-full-or-cluster",
            r"(^|;)\s*(VACUUM\s+(FULL\b|\([^)]*\bFULL\b(?!\s+(FALSE|OFF|0)\b))|CLUSTER\b)",
        ),
        (
            "setting-tablespace",
            r"\bALTER\s+(TABLE|INDEX|MATERIALIZED\s+VIEW)\b[^;]*\bSET\s+TABLESPACE\b",
        ),
        ("adding-exclusion-constraint", r"\bADD\s+(CONSTRAINT\s+\S+\s+)?EXCLUDE\b"),
        ("require-concurrent-index-deletion", r"\bDROP\s+INDEX\s+(?!CONCURRENTLY)"),
        (
            "disallowed-unique-constraint",
            r"\bADD\s+(CONSTRAINT\s+\S+\s+)?(UNIQUE|PRIMARY\s+KEY)\b(?![^;]*\bUSING\s+INDEX\b)",
        ),
        (
            "enum-value-removed",
            r"\bALTER\s+TYPE\s+\S+\s+RENAME\s+(VALUE|TO)\b|\bDELETE\s+FROM\s+pg_enum\b",
        ),
        (
            "prefer-bigint-pk",
            r"\b(INT|INTEGER|INT4|SERIAL|SMALLINT|SMALLSERIAL)\b\s+(NOT\s+NULL\s+)?"
            r"PRIMARY\s+KEY",
        ),
        ("prefer-timestamptz", r"\bTIMESTAMP\b(?!\s*(\(\d\)\s*)?WITH\s+TIME\s+ZONE)(?!TZ)"),
        (
            "missing-lock-timeout",
            r"\bSET\s+(LOCAL\s+|SESSION\s+)?LOCK_TIMEOUT\s*(=|TO)\s*"
            # zero in any unit ('0', 0, '0s', '0ms', '0.0min'...) turns the timeout off
            r"('\s*0+(\.0*)?\s*(us|ms|s|min|h|d)?\s*'|0+(\.0*)?|DEFAULT)\s*(;|$)"
            r"|\bRESET\s+(LOCK_TIMEOUT|ALL)\b",
        ),
    )
)
_CREATE_TABLE = re.compile(  # a new table is new however made: UNLOGGED, TEMP...
    r"\bCREATE\s+(?:(?:GLOBAL|LOCAL|TEMP\w*|UNLOGGED)\s+)*TABLE\s+(IF\s+NOT\s+EXISTS\s+)?" + _NAME,
    re.I,
)
_CREATE_INDEX = re.compile(
    r"\bCREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)[^;]*?\bON\s+(ONLY\s+)?" + _NAME, re.IGNORECASE
)
_ALTER_TABLE = re.compile(r"\bALTER\s+TABLE\s+(IF\s+EXISTS\s+)?(ONLY\s+)?" + _NAME, re.IGNORECASE)
_NOT_NULL_ADD = re.compile(r"\bADD\s+(COLUMN\s+)?[^;]*\bNOT\s+NULL\b", re.IGNORECASE)
#: a column added: COLUMN is optional (ALTER TABLE t ADD col int), a constraint is not one
_COLUMN_ADD = re.compile(
    r"\bADD\s+(COLUMN\b|(?!(CONSTRAINT|UNIQUE|PRIMARY|FOREIGN|CHECK|EXCLUDE|GENERATED)\b)[\"\w])",
    re.IGNORECASE,
)
_CONSTRAINT_ADD = re.compile(
    r"\bADD\s+(CONSTRAINT\s+\S+\s+)?(FOREIGN\s+KEY|CHECK)\b"
    # a column added with its constraint (which cannot be NOT VALID)
    r"|\bADD\s+(COLUMN\s+)?[^;]*\b(REFERENCES|CHECK)\b",
    re.IGNORECASE,
)


def check_sql(sql: str, state: RevisionState) -> Iterator[str]:
    """Rule ids raw SQL breaks (``op.execute`` text or a ``.sql`` revision's statement).

    Args:
        sql: One statement, or several separated by ``;``; each is checked on its own, without
            its comments.
        state: What the revision did so far; updated.

    Returns:
        An iterator of the rule ids, a rule once per statement breaking it.
    """
    for statement in split_statements(sql, comments=False):
        yield from _check_statement(statement, state)


def _check_statement(text: str, state: RevisionState) -> Iterator[str]:
    if (created := _CREATE_TABLE.search(text)) is not None:
        state.new_tables.add(created.group(2).split(".")[-1])
        if "DROP" not in text.upper():
            yield from (r for r, p in _SQL_RULES if r.startswith("prefer-") and p.search(text))
            return
    altered = _ALTER_TABLE.search(text)
    on_new = altered is not None and altered.group(3).split(".")[-1] in state.new_tables
    if re.search(r"\bVALIDATE\s+CONSTRAINT\b", text, re.IGNORECASE):
        state.validated = True
    for rule, pattern in _SQL_RULES:
        if pattern.search(text) and not (on_new and not rule.startswith("prefer-")):
            yield rule
    if re.search(r"\bDROP\s+TABLE\b", text, re.IGNORECASE):
        yield "dropping-table"
    index = _CREATE_INDEX.search(text)
    if index is not None and index.group(3).split(".")[-1] not in state.new_tables:
        yield "require-concurrent-index-creation"
    if on_new:
        return
    has_default = re.search(r"\bDEFAULT\b", text, re.IGNORECASE) is not None
    adds_column = altered is not None and _COLUMN_ADD.search(text) is not None
    if _NOT_NULL_ADD.search(text) and adds_column and not has_default:
        yield "adding-not-nullable-field"
    if _CONSTRAINT_ADD.search(text) and not re.search(r"\bNOT\s+VALID\b", text, re.IGNORECASE):
        yield "constraint-missing-not-valid"
    sets_not_null = re.search(r"\bALTER\s+(COLUMN\s+)?\S+\s+SET\s+NOT\s+NULL\b", text, re.I)
    if sets_not_null and not state.validated:
        yield "setting-not-null"
