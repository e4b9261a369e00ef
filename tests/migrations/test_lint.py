"""The linter: one revision per rule is flagged with that rule at the operation's line, a corpus
of safe revisions is not, safety_assured turns a finding into a non-blocking note."""

from __future__ import annotations

from pathlib import Path

import pytest

from dalkit.migrations import RULES, Finding, blocking, lint_scripts
from dalkit.migrations.scripts import DalkitScriptDirectory

from .project import write_revision

UNSAFE: dict[str, str] = {
    "adding-not-nullable-field": "op.add_column('users', sa.Column('age', sa.Integer(), "
    "nullable=False))",
    "adding-volatile-default": "op.add_column('users', sa.Column('token', sa.String(), "
    "server_default=sa.text('gen_random_uuid()')))",
    "changing-column-type": "op.alter_column('users', 'email', type_=sa.Text(), "
    "existing_type=sa.String(100))",
    "renaming-column": "op.alter_column('users', 'email', new_column_name='mail')",
    "renaming-table": "op.rename_table('users', 'people')",
    "dropping-column": "op.drop_column('users', 'email')",
    "dropping-table": "op.drop_table('users')",
    "require-concurrent-index-creation": "op.create_index('ix_email', 'users', ['email'])",
    "require-concurrent-index-deletion": "op.drop_index('ix_email', table_name='users')",
    "constraint-missing-not-valid": "op.create_foreign_key('fk_user', 'posts', 'users', "
    "['user_id'], ['id'])",
    "disallowed-unique-constraint": "op.create_unique_constraint('uq_email', 'users', ['email'])",
    "require-concurrent-reindex": "op.execute('REINDEX INDEX ix_email')",
    "vacuum-full-or-cluster": "op.execute('VACUUM FULL users')",
    "setting-tablespace": "op.execute('ALTER TABLE users SET TABLESPACE fast')",
    "adding-exclusion-constraint": "op.create_exclude_constraint('ex_room', 'bookings', "
    "('room', '='), ('during', '&&'), using='gist')",
    "setting-not-null": "op.alter_column('users', 'email', nullable=False, "
    "existing_type=sa.String(100))",
    "enum-value-removed": "op.execute(\"ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'\")",
    "prefer-bigint-pk": "op.create_table('t', sa.Column('id', sa.Integer(), primary_key=True))",
    "prefer-timestamptz": "op.create_table('t', sa.Column('id', sa.BigInteger(), "
    "primary_key=True), sa.Column('at', sa.DateTime()))",
    "missing-lock-timeout": "op.execute('SET lock_timeout = 0')",
}

#: raw SQL through op.execute is checked with the same rules
UNSAFE_SQL: dict[str, str] = {
    "adding-not-nullable-field": "ALTER TABLE users ADD COLUMN age int NOT NULL",
    "adding-volatile-default": "ALTER TABLE users ADD COLUMN t uuid DEFAULT gen_random_uuid()",
    "changing-column-type": "ALTER TABLE users ALTER COLUMN email TYPE text",
    "renaming-column": "ALTER TABLE users RENAME COLUMN email TO mail",
    "renaming-table": "ALTER TABLE users RENAME TO people",
    "dropping-column": "ALTER TABLE users DROP COLUMN email",
    "dropping-table": "DROP TABLE users",
    "require-concurrent-index-creation": "CREATE INDEX ix_email ON users (email)",
    "require-concurrent-index-deletion": "DROP INDEX ix_email",
    "constraint-missing-not-valid": "ALTER TABLE posts ADD CONSTRAINT c CHECK (id > 0)",
    "disallowed-unique-constraint": "ALTER TABLE users ADD CONSTRAINT uq UNIQUE (email)",
    "require-concurrent-reindex": "REINDEX TABLE users",
    "vacuum-full-or-cluster": "CLUSTER users USING ix_email",
    "setting-tablespace": "ALTER INDEX ix_email SET TABLESPACE fast",
    "adding-exclusion-constraint": "ALTER TABLE bookings ADD CONSTRAINT ex EXCLUDE USING gist "
    "(room WITH =, during WITH &&)",
    "setting-not-null": "ALTER TABLE users ALTER COLUMN email SET NOT NULL",
    "enum-value-removed": "ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'",
    "prefer-bigint-pk": "CREATE TABLE t (id serial PRIMARY KEY)",
    "prefer-timestamptz": "CREATE TABLE t (id bigint PRIMARY KEY, at timestamp)",
    "missing-lock-timeout": "RESET lock_timeout",
}

SAFE: dict[str, str] = {
    "new table with its indexes and keys": """
        op.create_table(
            'orders',
            sa.Column('id', sa.BigInteger(), primary_key=True),
            sa.Column('user_id', sa.BigInteger(), sa.ForeignKey('users.id'), nullable=False),
            sa.Column('placed_at', sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index('ix_orders_user', 'orders', ['user_id'])
        op.create_unique_constraint('uq_orders', 'orders', ['user_id', 'placed_at'])
    """,
    "nullable column and constant default": """
        op.add_column('users', sa.Column('nickname', sa.String(50)))
        op.add_column('users', sa.Column('score', sa.Integer(), nullable=False,
                                         server_default='0'))
        op.add_column('users', sa.Column('seen', sa.DateTime(timezone=True),
                                         server_default=sa.text('now()')))
    """,
    "concurrent index build and drop": """
        op.create_index_concurrently('ix_users_email', 'users', ['email'])
        op.drop_index_concurrently('ix_users_old', table_name='users')
    """,
    "not valid, then validated": """
        op.create_foreign_key('fk_posts_user', 'posts', 'users', ['user_id'], ['id'],
                              postgresql_not_valid=True)
        op.create_check_constraint('ck_age', 'users', 'age > 0', postgresql_not_valid=True)
        op.execute('ALTER TABLE posts VALIDATE CONSTRAINT fk_posts_user')
    """,
    "set not null after a validated check": """
        op.execute('ALTER TABLE users ADD CONSTRAINT ck_email CHECK (email IS NOT NULL) NOT VALID')
        op.execute('ALTER TABLE users VALIDATE CONSTRAINT ck_email')
        op.alter_column('users', 'email', nullable=False, existing_type=sa.String(100))
    """,
    "unique constraint from a concurrent index": """
        op.create_index_concurrently('ix_uq_email', 'users', ['email'], unique=True)
        op.execute('ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE USING INDEX ix_uq_email')
    """,
    "the column, then its key NOT VALID": """
        op.add_column('posts', sa.Column('user_id', sa.BigInteger()))
        op.create_foreign_key('fk_posts_user', 'posts', 'users', ['user_id'], ['id'],
                              postgresql_not_valid=True)
    """,
    "a lock timeout changed, not turned off": "op.execute(\"SET lock_timeout = '2s'\")",
    "a constraint, a default and NOT NULL dropped": """
        op.execute('ALTER TABLE users DROP CONSTRAINT IF EXISTS ck_age')
        op.execute('ALTER TABLE users ALTER COLUMN email DROP DEFAULT')
        op.execute('ALTER TABLE users ALTER email DROP NOT NULL')
    """,
    "an unlogged and a temporary table with their indexes": """
        op.execute('CREATE UNLOGGED TABLE staging (id bigint PRIMARY KEY, email text)')
        op.execute('CREATE INDEX ix_staging_email ON staging (email)')
        op.execute('CREATE TEMP TABLE scratch (id bigint PRIMARY KEY, n int)')
        op.execute('ALTER TABLE scratch ADD COLUMN m int NOT NULL')
    """,
    "enum value added": "op.execute(\"ALTER TYPE mood ADD VALUE 'meh'\")",
    "data backfill": 'op.execute("UPDATE users SET nickname = name WHERE nickname IS NULL")',
    "concurrent reindex, plain vacuum, a table marked for a later CLUSTER": """
        with op.get_context().autocommit_block():
            op.execute('REINDEX INDEX CONCURRENTLY ix_users_email')
            op.execute('REINDEX (VERBOSE, CONCURRENTLY) TABLE users')
            op.execute('VACUUM (ANALYZE) users')
        op.execute('ALTER TABLE users CLUSTER ON ix_users_email')
    """,
    "an exclusion constraint and a tablespace of a new table": """
        op.create_table(
            'bookings',
            sa.Column('id', sa.BigInteger(), primary_key=True),
            sa.Column('room', sa.BigInteger()),
        )
        op.create_exclude_constraint('ex_room', 'bookings', ('room', '='))
        op.execute('ALTER TABLE bookings ADD CONSTRAINT ex_id EXCLUDE (id WITH =)')
        op.execute('ALTER TABLE bookings SET TABLESPACE fast')
        op.execute('CREATE TABLE slots (id bigint PRIMARY KEY, EXCLUDE USING gist (id WITH =))')
    """,
    "a primary key from a concurrent index": """
        op.create_index_concurrently('ix_pk_orders', 'orders', ['id'], unique=True)
        op.execute('ALTER TABLE orders ADD CONSTRAINT pk PRIMARY KEY USING INDEX ix_pk_orders')
    """,
    "an existing column made an identity": (
        "op.execute('ALTER TABLE users ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY')"
    ),
    "a new table with identity, serial and generated columns": """
        op.create_table(
            'ledger',
            sa.Column('id', sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column('qty', sa.Integer()),
            sa.Column('double', sa.Integer(), sa.Computed('qty * 2')),
        )
        op.execute('CREATE TABLE journal (id bigserial PRIMARY KEY)')
        op.execute('ALTER TABLE journal ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY')
    """,
}


#: more spellings of what a rule flags
MORE_UNSAFE: list[tuple[str, str]] = [
    # a key added with its column cannot be NOT VALID: validated at once
    (
        "constraint-missing-not-valid",
        "op.add_column('orders', sa.Column('customer_id', sa.BigInteger(), "
        "sa.ForeignKey('customers.id')))",
    ),
    (
        "constraint-missing-not-valid",
        "op.add_column('orders', sa.Column('qty', sa.Integer(), sa.CheckConstraint('qty > 0')))",
    ),
    (
        "constraint-missing-not-valid",
        "op.execute('ALTER TABLE orders ADD COLUMN customer_id bigint REFERENCES customers (id)')",
    ),
    (
        "constraint-missing-not-valid",
        "op.execute('ALTER TABLE orders ADD customer_id bigint REFERENCES customers (id)')",
    ),
    # a primary key builds its unique index under the same lock as a UNIQUE constraint
    ("disallowed-unique-constraint", "op.create_primary_key('pk_orders', 'orders', ['id'])"),
    ("disallowed-unique-constraint", "op.execute('ALTER TABLE orders ADD PRIMARY KEY (id)')"),
    # a value made for each row rewrites the table, as a volatile default does
    (
        "adding-volatile-default",
        "op.add_column('orders', sa.Column('seq', sa.BigInteger(), sa.Identity(), nullable=False))",
    ),
    (
        "adding-volatile-default",
        "op.add_column('orders', sa.Column('double', sa.Integer(), sa.Computed('qty * 2')))",
    ),
    ("adding-volatile-default", "op.execute('ALTER TABLE orders ADD COLUMN seq bigserial')"),
    ("adding-volatile-default", "op.execute('ALTER TABLE orders ADD seq serial4 NOT NULL')"),
    (
        "adding-volatile-default",
        "op.execute('ALTER TABLE orders ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY')",
    ),
    (
        "adding-volatile-default",
        "op.execute('ALTER TABLE orders ADD COLUMN d int GENERATED ALWAYS AS (qty * 2) STORED')",
    ),
    # the heavy maintenance commands, in their other spellings
    ("require-concurrent-reindex", "op.execute('reindex (verbose) index ix_email')"),
    ("require-concurrent-reindex", "op.execute('REINDEX (CONCURRENTLY false) TABLE users')"),
    ("vacuum-full-or-cluster", "op.execute('VACUUM (VERBOSE, FULL) users')"),
    ("vacuum-full-or-cluster", "op.execute('CLUSTER users')"),
    ("setting-tablespace", "op.execute('ALTER TABLE ALL IN TABLESPACE slow SET TABLESPACE fast')"),
    ("adding-exclusion-constraint", "op.execute('ALTER TABLE bookings ADD EXCLUDE (room WITH =)')"),
    ("missing-lock-timeout", "op.execute(\"SET lock_timeout = '0s'\")"),
    ("missing-lock-timeout", "op.execute(\"SET LOCAL lock_timeout TO '0ms'\")"),
    ("missing-lock-timeout", "op.execute(\"SET lock_timeout = ' 0.0 min '\")"),
    # several statements in one op.execute: each is checked, a CREATE TABLE first included
    (
        "setting-not-null",
        "op.execute('CREATE TABLE t2 (id bigint PRIMARY KEY); "
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL')",
    ),
    (
        "adding-not-nullable-field",
        "op.execute('CREATE TABLE t2 (id bigint PRIMARY KEY);\\n"
        "ALTER TABLE users ADD COLUMN age int NOT NULL')",
    ),
    # a -- inside a string is no comment; comments (/* */ too) hide nothing
    (
        "require-concurrent-index-creation",
        "op.execute(\"UPDATE users SET note = 'a--b'; CREATE INDEX ix ON users (email)\")",
    ),
    ("require-concurrent-index-creation", "op.execute('CREATE /* hot */ INDEX ix ON users (a)')"),
    ("changing-column-type", "op.execute('ALTER TABLE users ALTER /* c */ COLUMN a TYPE text')"),
    # an enum column given fewer values (not a type change, whose recipe does not apply)
    (
        "enum-value-removed",
        "op.alter_column('users', 'mood', type_=sa.Enum('happy', name='mood'), "
        "existing_type=sa.Enum('happy', 'sad', name='mood'))",
    ),
    # COLUMN is optional in a rename
    ("renaming-column", "op.execute('ALTER TABLE users RENAME email TO mail')"),
    # ... and in ADD and DROP
    ("adding-not-nullable-field", "op.execute('ALTER TABLE users ADD age int NOT NULL')"),
    (
        "adding-not-nullable-field",
        "op.execute('ALTER TABLE users ADD IF NOT EXISTS age numeric(10, 2) NOT NULL')",
    ),
    ("dropping-column", "op.execute('ALTER TABLE users DROP email')"),
    ("dropping-column", "op.execute('ALTER TABLE users DROP IF EXISTS email CASCADE')"),
]


def _lint(directory: Path, revision: str, upgrade: str) -> list[Finding]:
    path = write_revision(directory, revision, None, upgrade)
    scripts = [s for s in DalkitScriptDirectory(directory).walk_revisions() if s.path == str(path)]
    return lint_scripts(scripts)


def test_every_rule_has_a_fixture() -> None:
    assert set(UNSAFE) == set(RULES)
    assert set(UNSAFE_SQL) == set(RULES)


@pytest.mark.parametrize("rule", sorted(UNSAFE))
def test_an_unsafe_operation_is_flagged_with_its_rule_line_and_recipe(
    tmp_path: Path, rule: str
) -> None:
    findings = _lint(tmp_path, "r1", UNSAFE[rule])
    assert rule in {f.rule for f in findings}
    finding = next(f for f in findings if f.rule == rule)
    assert finding.line == 16  # the line of the operation in the revision file
    assert finding.recipe == RULES[rule].recipe
    assert finding.operation.startswith("op.")
    assert finding.blocks
    assert f"r1_rev.py:16 {rule}" in str(finding)


@pytest.mark.parametrize(("rule", "upgrade"), MORE_UNSAFE)
def test_other_spellings_of_an_unsafe_operation_are_flagged(
    tmp_path: Path, rule: str, upgrade: str
) -> None:
    assert rule in {f.rule for f in _lint(tmp_path, "r1", upgrade)}


@pytest.mark.parametrize("rule", sorted(UNSAFE_SQL))
def test_raw_sql_through_op_execute_is_checked_too(tmp_path: Path, rule: str) -> None:
    findings = _lint(tmp_path, "r1", f"op.execute({UNSAFE_SQL[rule]!r})")
    assert rule in {f.rule for f in findings}


@pytest.mark.parametrize("rule", sorted(UNSAFE_SQL))
def test_a_sql_file_revision_is_checked_statement_by_statement(tmp_path: Path, rule: str) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "s1_raw.sql").write_text(
        "-- revision: s1\n-- down_revision: none\n-- message: raw\n"
        "SELECT 1;\n\n" + UNSAFE_SQL[rule] + ";\n-- down\nSELECT 1;\n"
    )
    findings = lint_scripts(DalkitScriptDirectory(tmp_path).walk_revisions())
    assert rule in {f.rule for f in findings}
    assert next(f for f in findings if f.rule == rule).line == 6


@pytest.mark.parametrize("name", sorted(SAFE))
def test_a_safe_revision_is_not_flagged(tmp_path: Path, name: str) -> None:
    assert _lint(tmp_path, "r1", SAFE[name]) == []


def test_safety_assured_turns_a_finding_into_a_note(tmp_path: Path) -> None:
    decorated = _lint(
        tmp_path / "a",
        "r1",
        """
        with safety_assured(reason="nothing reads email since release 41"):
            op.drop_column('users', 'email')
        op.drop_column('users', 'age')
        """,
    )
    assert [(f.rule, f.assured) for f in decorated] == [
        ("dropping-column", "nothing reads email since release 41"),
        ("dropping-column", None),
    ]
    assert blocking(decorated) == [decorated[1]]


def test_safety_assured_needs_a_reason() -> None:
    from dalkit.errors import ConfigurationError
    from dalkit.migrations import safety_assured

    with pytest.raises(ConfigurationError):
        safety_assured(reason=" ")
