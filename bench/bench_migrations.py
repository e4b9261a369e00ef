"""Migrations: upgrade then downgrade 50 revisions, dalkit against plain Alembic.

One operation is a whole cycle: ``upgrade`` from empty to the 50th revision, then ``downgrade``
to base (each revision creates a table with an index; its downgrade drops it). The baseline is
plain Alembic (``command.upgrade`` / ``command.downgrade`` with an env.py on the same
connection and ``transaction_per_migration``) on the same revision files. dalkit adds the
linter, the migration lock, session timeouts and per-revision retries; "with backup" adds the
backup taken before the upgrade (SQLite backup API, ``pg_dump -Fc``). Each figure is cycles/s,
the median of ``REPEATS`` cycles taken in turns; *ratio* is against plain Alembic.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from bench.timing import MIN_REPEATS, median_and_spread, paired_ratio
from dalkit import Database
from dalkit.migrations import Migrations, MigrationSettings

REVISIONS = 50
# as many as every other module's batches: DDL times swing (one cycle 0.5x to 1.7x the next,
# catalog churn), and 5 repeats left the ratio's spread at 47%
REPEATS = MIN_REPEATS
#: dalkit's overhead over plain Alembic without backup: at most 20% more time
TARGET_RATIO = 1 / 1.2

ENV_PY = """
from alembic import context
import dalkit.migrations  # noqa: F401

connection = context.config.attributes["connection"]
context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = '''"""table {n}"""
import sqlalchemy as sa
from alembic import op

revision = "r{n:03d}"
down_revision = {down!r}


def upgrade() -> None:
    op.create_table(
        "bench_t{n:03d}",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_bench_t{n:03d}_name", "bench_t{n:03d}", ["name"])


def downgrade() -> None:
    op.drop_table("bench_t{n:03d}")
'''


def _write_project(directory: Path) -> None:
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(ENV_PY)
    for n in range(1, REVISIONS + 1):
        down = None if n == 1 else f"r{n - 1:03d}"
        (directory / "versions" / f"r{n:03d}.py").write_text(REVISION.format(n=n, down=down))


def _alembic_cycle(db: Database, directory: Path) -> Callable[[], None]:
    config = Config()
    config.set_main_option("script_location", str(directory))

    def cycle() -> None:
        with db.engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            command.downgrade(config, "base")

    return cycle


def _dalkit_cycle(migrations: Migrations[Database], backup: bool) -> Callable[[], None]:
    def cycle() -> None:
        migrations.upgrade(backup=backup)
        migrations.downgrade("base")

    return cycle


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dalkit-bench-migrations-") as scratch:
        directory = Path(scratch) / "migrations"
        _write_project(directory)
        for label, url in (
            ("SQLite", sqlite_url),
            ("PostgreSQL", make_url(pg_url).set(drivername="postgresql+psycopg")),
        ):
            db = Database(url)
            settings = MigrationSettings(backup_dir=Path(scratch) / "backups")
            migrations = Migrations(db, directory, settings=settings)
            variants = {
                f"{label}: plain Alembic": _alembic_cycle(db, directory),
                f"{label}: dalkit": _dalkit_cycle(migrations, backup=False),
                f"{label}: dalkit with backup": _dalkit_cycle(migrations, backup=True),
            }
            rows += _measure(variants, baseline=f"{label}: plain Alembic")
            with db.engine.begin() as connection:
                connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
            db.dispose()
    return rows


def _measure(variants: dict[str, Callable[[], None]], baseline: str) -> list[dict[str, Any]]:
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: imports, first connections, compiled caches
        variants[name]()
    for repeat in range(REPEATS):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            variants[name]()
            samples[name].append(1.0 / (time.perf_counter() - started))
    rows = []
    for name in names:
        ops, spread = median_and_spread(samples[name])
        row: dict[str, Any] = {"name": name, "ops_per_s": ops, "spread_pct": spread}
        if name != baseline:
            ratio, ratio_spread = paired_ratio(samples[name], samples[baseline])
            row |= {"baseline": baseline, "ratio": ratio, "ratio_spread_pct": ratio_spread}
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row["name"].endswith(": dalkit"):
            overhead = 100.0 * (1.0 / row["ratio"] - 1.0)
            verdict = "meets" if row["ratio"] >= TARGET_RATIO else "MISSES"
            lines.append(
                f"- {row['name']}: {overhead:+.0f}% time over plain Alembic for "
                f"{REVISIONS} up + {REVISIONS} down ({verdict} the 20% target)"
            )
    return "\n".join(lines)
