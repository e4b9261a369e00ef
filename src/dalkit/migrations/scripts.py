"""The migration directory: Alembic's ScriptDirectory that also reads ``.sql`` revisions, the
Config built in code (no ``alembic.ini``), and ``init`` / new ``.sql`` revision files."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from dalkit.migrations.errors import MigrationError
from dalkit.migrations.sql_files import load_sql_module

__all__ = ["DalkitScriptDirectory", "init_directory", "make_config", "write_sql_revision"]

SCRIPT_TEMPLATE = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dalkit.migrations  # noqa: F401  (op.create_index_concurrently, safety_assured)
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''

ENV_PY = '''"""Alembic's env.py, for running this directory with the plain ``alembic`` command.

dalkit does not use this file: ``dalkit migrate`` and ``Migrations`` run the same revisions with
timeouts, the migration lock, linting and backups. Plain Alembic reads DALKIT_DATABASE_URL here.
"""

import os

from alembic import context
from sqlalchemy import create_engine

import dalkit.migrations  # noqa: F401  (registers op.create_index_concurrently)

url = os.environ["DALKIT_DATABASE_URL"]
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
'''

_SQL_FILE = re.compile(r"^[^._].*\.sql$")


class DalkitScriptDirectory(ScriptDirectory):
    """A ScriptDirectory whose history holds ``.sql`` revisions next to Python ones, and whose
    broken revision files are a MigrationError naming the file."""

    def _load_revisions(self) -> Iterator[Script]:
        scripts = [*self._python_revisions(), *self._sql_revisions()]
        _check_links(scripts)
        yield from scripts

    def _python_revisions(self) -> Iterator[Script]:
        # Alembic's own loop, one file at a time: its errors (SyntaxError, ImportError, anything
        # a module raises on import) do not say which file, and would reach users as tracebacks
        seen: set[Path] = set()
        for location in self._version_locations:
            if not location.exists():
                continue
            for file_path in Script._list_py_dir(self, location):
                path = Path(file_path).resolve()
                if path in seen:  # a location listed twice
                    continue
                seen.add(path)
                try:
                    script = Script._from_path(self, path)
                except Exception as exc:
                    raise MigrationError(
                        f"{path}: this revision cannot be loaded: {type(exc).__name__}: {exc}"
                    ) from exc
                if script is not None:
                    yield script

    def _sql_revisions(self) -> Iterator[Script]:
        for location in self._version_locations:
            if not location.exists():
                continue
            for path in sorted(location.iterdir()):
                if _SQL_FILE.match(path.name):
                    module = load_sql_module(path)
                    yield Script(module, module.revision, path)


def _check_links(scripts: list[Script]) -> None:
    """A MigrationError naming the file for a revision id used twice or a down_revision that
    names no revision (Alembic warns, then fails with a bare KeyError)."""
    files: dict[str, str] = {}
    for script in scripts:
        if script.revision in files:
            raise MigrationError(
                f"{script.path}: revision {script.revision!r} is also the revision of "
                f"{files[script.revision]}: give one of them a new id"
            )
        files[script.revision] = script.path
    for script in scripts:
        down_revision = script.down_revision
        downs = (down_revision,) if isinstance(down_revision, str) else down_revision or ()
        for down in downs:
            if down not in files:
                raise MigrationError(
                    f"{script.path}: down_revision {down!r} names no revision in "
                    f"{Path(script.path).parent}"
                )


def make_config(directory: Path, version_table: str = "alembic_version") -> Config:
    """An Alembic Config made in code; an ``alembic.ini`` next to the directory is not read."""
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.set_main_option("version_table", version_table)
    return config


def open_directory(directory: Path) -> DalkitScriptDirectory:
    """The script directory at ``directory``, or MigrationError saying to run ``init``."""
    if not (directory / "versions").is_dir():
        raise MigrationError(
            f"{directory} is not a migration directory (no versions/ in it): "
            "run `dalkit migrate init` first"
        )
    # quiet: Alembic would print "Generating ..." to stdout, under the caller's Rich output
    return DalkitScriptDirectory(directory, messaging_opts={"quiet": True})


def init_directory(directory: Path) -> None:
    """Create ``directory`` with ``versions/``, the revision template and a plain-Alembic env.py;
    files that exist already (an existing Alembic project) are left as they are."""
    (directory / "versions").mkdir(parents=True, exist_ok=True)
    for name, text in (("script.py.mako", SCRIPT_TEMPLATE), ("env.py", ENV_PY)):
        path = directory / name
        if not path.exists():
            path.write_text(text, encoding="utf-8")


def write_sql_revision(
    script: ScriptDirectory, message: str, up_sql: str = "", down_sql: str = ""
) -> Path:
    """Write a new ``.sql`` revision on top of the single head; return its path."""
    heads = script.get_heads()
    if len(heads) > 1:
        raise MigrationError(f"several heads ({', '.join(heads)}): merge them first")
    revision = uuid.uuid4().hex[:12]
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "revision"
    path = Path(script.versions) / f"{revision}_{slug}.sql"
    path.write_text(
        f"-- revision: {revision}\n"
        f"-- down_revision: {heads[0] if heads else 'none'}\n"
        f"-- message: {message}\n"
        f"{up_sql.strip()}\n"
        "-- down\n"
        f"{down_sql.strip()}\n",
        encoding="utf-8",
    )
    return path
