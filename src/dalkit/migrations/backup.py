"""Backups taken before an upgrade and restored after a failure: SQLite's online backup API,
PostgreSQL's ``pg_dump -Fc`` / ``pg_restore``. The password goes to the tools through the
environment, never on a command line: the URL's, or the one a config took out of its query
(``?password=...`` is a connect argument then)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from dalkit.migrations.errors import BackupError

__all__ = ["restore_backup", "take_backup"]

#: where the client tools usually are when PATH lacks them (a cron job, a slim container)
_FALLBACK_DIRS: tuple[Path, ...] = (Path("/usr/bin"), Path("/usr/local/bin"))

_USER_SCHEMAS = sa.text(
    "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
    "AND nspname NOT IN ('information_schema', 'public') ORDER BY nspname"
)
# objects in public, minus those an extension owns (dropping the extension drops them)
_NOT_FROM_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
)
_PUBLIC_OBJECTS: tuple[tuple[str, str], ...] = (
    (
        "EXTENSION",
        "SELECT quote_ident(e.extname) FROM pg_extension e JOIN pg_namespace n "
        "ON n.oid = e.extnamespace WHERE n.nspname = 'public'",
    ),
    (
        "relation",
        "SELECT c.relkind::text, quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND "
        + _NOT_FROM_EXTENSION.format(oid="c.oid"),
    ),
    (
        "type",
        "SELECT t.typtype::text, quote_ident(t.typname) FROM pg_type t JOIN pg_namespace n "
        "ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r') "
        "AND " + _NOT_FROM_EXTENSION.format(oid="t.oid"),
    ),
    (
        "ROUTINE",
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND "
        + _NOT_FROM_EXTENSION.format(oid="p.oid"),
    ),
)
_RELATION_KINDS = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
}
_TYPE_KINDS = {"e": "TYPE", "r": "TYPE", "d": "DOMAIN"}
_ERROR_LINE = re.compile(r"\b(ERROR|FATAL|error):")
# no ~/.psqlrc, no chatter, and stop at the first error (the server then rolls back)
_PSQL_OPTIONS = ("--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1")


def take_backup(url: URL, directory: Path, label: str = "", password: str | None = None) -> Path:
    """Back up the database at ``url`` into a new file under ``directory``; return its path.
    ``password`` is the connection's when the URL holds none (a connect argument)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{Path(url.database or 'db').stem}-{stamp}{'-' + label if label else ''}"
    backend = url.get_backend_name()
    if backend == "sqlite":
        source = _sqlite_file(url)
        path = directory / f"{name}.sqlite3"
        with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(path)) as dst:
            src.backup(dst)
        return path
    if backend == "postgresql":
        path = directory / f"{name}.dump"
        _run_tool("pg_dump", ["-Fc", "--no-owner", "--file", str(path)], _with(url, password))
        return path
    raise BackupError(f"dalkit cannot back up a {backend} database; run with backup=False")


def restore_backup(connection: Connection, path: Path, password: str | None = None) -> None:
    """Restore the database behind ``connection`` to the backup at ``path``, replacing
    everything in it (tables created since the backup included).

    The file is checked before anything changes, and on PostgreSQL the emptying and the restore
    run in one transaction: a file that is not a backup, or a restore that fails part-way,
    leaves the database as it was. ``password`` is the connection's when its URL holds none.
    """
    if not path.is_file():
        raise BackupError(f"no backup file at {path}", bad_input=True)
    url = _with(connection.engine.url, password)
    if connection.in_transaction():
        connection.rollback()
    if url.get_backend_name() == "sqlite":
        _restore_sqlite(_sqlite_file(url), path)
        return
    if url.get_backend_name() != "postgresql":
        raise BackupError(f"dalkit cannot restore a {url.get_backend_name()} database")
    with tempfile.TemporaryDirectory(prefix="dalkit-restore-") as scratch:
        # pg_restore reads the whole archive (data included) into a script before anything is
        # dropped: a wrong or truncated file is refused with the database untouched
        script = Path(scratch) / "restore.sql"
        arguments = ["--no-owner", "--single-transaction", "--exit-on-error", "--file", str(script)]
        _run_tool(
            "pg_restore",
            [*arguments, str(path)],
            url,
            failure=f"{path} cannot be restored, and nothing was changed",
            bad_input=True,
        )
        drops = Path(scratch) / "drops.sql"
        # BEGIN here: the drops and the script (which ends with its COMMIT) are one transaction,
        # rolled back by the server when psql stops at an error
        drops.write_text("BEGIN;\n" + "".join(f"{s};\n" for s in _drop_statements(connection)))
        _run_tool(
            "psql",
            [*_PSQL_OPTIONS, "--file", str(drops), "--file", str(script)],
            url,
            failure=f"restoring {path} failed and was rolled back: the database is unchanged",
        )


def _restore_sqlite(target: str, path: Path) -> None:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as src:
        try:
            # a file that is not a SQLite database fails here, before the target is touched
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            message = f"{path} is not a SQLite backup, and nothing was changed: {exc}"
            raise BackupError(message, bad_input=True) from exc
        try:
            with closing(sqlite3.connect(target)) as dst:
                src.backup(dst)
        except sqlite3.Error as exc:
            raise BackupError(f"restoring {path} failed: {exc}") from exc


def _drop_statements(connection: Connection) -> list[str]:
    """The statements that drop every user object, keeping the public schema itself (its
    owner, grants, comment)."""
    quote = connection.dialect.identifier_preparer.quote
    statements = [
        f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE"
        for (schema,) in connection.execute(_USER_SCHEMAS).all()
    ]
    for kind, query in _PUBLIC_OBJECTS:
        for row in connection.execute(sa.text(query)).all():
            if kind == "relation":
                statements.append(
                    f"DROP {_RELATION_KINDS[row[0]]} IF EXISTS public.{row[1]} CASCADE"
                )
            elif kind == "type":
                statements.append(f"DROP {_TYPE_KINDS[row[0]]} IF EXISTS public.{row[1]} CASCADE")
            else:
                statements.append(f"DROP {kind} IF EXISTS {row[0]} CASCADE")
    # end the read: psql's drops must not wait behind this connection's snapshot
    connection.rollback()
    return statements


def _with(url: URL, password: str | None) -> URL:
    """``url`` with ``password`` when it holds none, for the tools' environment."""
    return url if url.password or not password else url.set(password=password)


def _sqlite_file(url: URL) -> str:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("an in-memory SQLite database cannot be backed up; use backup=False")
    return database


def _run_tool(
    tool: str, arguments: list[str], url: URL, *, failure: str = "", bad_input: bool = False
) -> None:
    """Run a client tool with the database at ``url`` in its environment (PGHOST...); a
    BackupError saying ``failure``, with the tool's stderr, when it fails."""
    executable = shutil.which(tool) or next(
        (str(d / tool) for d in _FALLBACK_DIRS if (d / tool).is_file()), None
    )
    if executable is None:
        raise BackupError(
            f"{tool} was not found on PATH: install the PostgreSQL client tools, "
            "or run without a backup (backup=False, --no-backup)"
        )
    environment = {**os.environ, **_libpq_environment(url)}
    command = [executable, *arguments]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        # from the first error on: psql's NOTICEs and WARNINGs before it (the drops cascading)
        # would bury it
        first = next((i for i, line in enumerate(lines) if _ERROR_LINE.search(line)), 0)
        message = "\n".join(lines[first:])
        if url.password:
            message = message.replace(url.password, "***")
        what = failure or f"{tool} failed"
        raise BackupError(
            f"{what} ({tool} exit {result.returncode}): {message}", bad_input=bad_input
        )


def _libpq_environment(url: URL) -> dict[str, str]:
    variables = {
        "PGHOST": url.host or str(url.query.get("host", "") or ""),
        "PGPORT": str(url.port or ""),
        "PGUSER": url.username or "",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.database or "",
    }
    return {key: value for key, value in variables.items() if value}
