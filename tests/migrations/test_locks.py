"""Timeouts, retries and the migration lock: every statement runs under lock_timeout and
statement_timeout, a blocked revision is retried until the blocker commits (and never waits
forever), and two processes running `migrate up` at once apply the revision once."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dalkit import Database
from dalkit.migrations import Migrations, MigrationSettings
from dalkit.migrations.errors import MigrationFailedError

from .project import write_revision

ITEMS = """
op.create_table('items', sa.Column('id', sa.BigInteger(), primary_key=True))
op.create_table('seen', sa.Column('setting', sa.Text()), sa.Column('value', sa.Text()))
"""
ADD_COLUMN = "op.add_column('items', sa.Column('note', sa.Text()))"
RECORD_TIMEOUTS = """
op.execute("INSERT INTO seen SELECT 'lock_timeout', current_setting('lock_timeout')")
op.execute("INSERT INTO seen SELECT 'statement_timeout', current_setting('statement_timeout')")
"""


def _rows(db: Database, query: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(query))]


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Database:
    return Database(_psycopg_url(postgres_database_url))


def test_every_statement_runs_under_the_configured_timeouts(
    pg_db: Database, directory: Path
) -> None:
    write_revision(directory, "r1", None, ITEMS)
    write_revision(directory, "r2", "r1", RECORD_TIMEOUTS)
    settings = MigrationSettings(lock_timeout_ms=1234, statement_timeout_ms=56789)
    Migrations(pg_db, directory, settings=settings).upgrade()
    rows = dict(_rows(pg_db, "SELECT setting, value FROM seen"))
    assert rows == {"lock_timeout": "1234ms", "statement_timeout": "56789ms"}
    # and the pooled connection went back without them
    assert _rows(pg_db, "SELECT current_setting('lock_timeout')") == [("0",)]
    pg_db.dispose()


@pytest.mark.slow
def test_a_lock_timeout_is_retried_until_the_blocker_commits(
    pg_db: Database, directory: Path, postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_revision(directory, "r1", None, ITEMS)
    write_revision(directory, "r2", "r1", ADD_COLUMN)
    settings = MigrationSettings(
        lock_timeout_ms=100, lock_retries=20, retry_backoff_s=0.05, retry_backoff_max_s=0.2
    )
    migrations = Migrations(pg_db, directory, settings=settings)
    migrations.upgrade("r1")
    with psycopg.connect(postgres_database_url) as blocker:
        blocker.execute("LOCK TABLE items IN ACCESS SHARE MODE")  # a long read, say
        release = threading.Timer(1.0, blocker.commit)
        release.start()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="dalkit.migrations"):
            assert migrations.upgrade().applied == ["r2"]
        release.join()
    assert time.monotonic() - started >= 0.9
    retries = [r for r in caplog.records if "lock timeout" in r.getMessage()]
    assert retries, "the revision should have timed out on the lock and been retried"
    pg_db.dispose()


def test_a_blocker_that_never_commits_fails_the_run_in_bounded_time(
    pg_db: Database, directory: Path, postgres_database_url: str
) -> None:
    write_revision(directory, "r1", None, ITEMS)
    write_revision(directory, "r2", "r1", ADD_COLUMN)
    settings = MigrationSettings(
        lock_timeout_ms=50, lock_retries=3, retry_backoff_s=0.01, retry_backoff_max_s=0.05
    )
    migrations = Migrations(pg_db, directory, settings=settings)
    migrations.upgrade("r1")
    with psycopg.connect(postgres_database_url) as blocker:
        blocker.execute("LOCK TABLE items IN ACCESS SHARE MODE")
        started = time.monotonic()
        with pytest.raises(MigrationFailedError, match="lock timeout"):
            migrations.upgrade()
        assert time.monotonic() - started < 5
    assert migrations.current() == ("r1",)
    pg_db.dispose()


def _migrate_up(url: str, directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            # the `dalkit migrate` group alone: the whole CLI only adds import time
            "from dalkit.cli.migrate import migrate_app; migrate_app()",
            "up",
            "--url",
            url,
            "--directory",
            str(directory),
            "--no-backup",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_migrating_at_once_apply_the_revision_once(
    backend: str, directory: Path, request: pytest.FixtureRequest
) -> None:
    base = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_database_url")
    url = base if backend == "sqlite" else _psycopg_url(base)
    slow = (
        "import time; time.sleep(1.5)"
        if backend == "sqlite"
        else "op.execute('SELECT pg_sleep(1.5)')"
    )
    write_revision(
        directory,
        "r1",
        None,
        f"""
        op.create_table('runs', sa.Column('id', sa.BigInteger(), primary_key=True))
        {slow}
        op.execute("INSERT INTO runs (id) VALUES (1)")
        """,
    )
    first, second = _migrate_up(url, directory), _migrate_up(url, directory)
    outputs = [process.communicate(timeout=60)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert sum("applied 1 revision" in out for out in outputs) == 1, outputs
    assert sum("nothing to do" in out for out in outputs) == 1, outputs
    db = Database(url)
    try:
        assert _rows(db, "SELECT count(*) FROM runs") == [(1,)]
        assert Migrations(db, directory).current() == ("r1",)
    finally:
        db.dispose()


def test_a_run_waits_for_the_migration_lock_a_bounded_time(
    pg_db: Database, directory: Path, postgres_database_url: str
) -> None:
    from dalkit.migrations import MigrationLockError
    from dalkit.migrations.locks import lock_key

    write_revision(directory, "r1", None, ITEMS)
    migrations = Migrations(pg_db, directory, settings=MigrationSettings(lock_wait_s=0.3))
    with psycopg.connect(postgres_database_url, autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(%s)", (lock_key("alembic_version"),))
        with pytest.raises(MigrationLockError, match="held the lock"):
            migrations.upgrade()
    assert migrations.upgrade().applied == ["r1"]
    pg_db.dispose()
