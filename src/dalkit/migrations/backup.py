"""Backups taken before an upgrade and restored after a failure: SQLite's online backup API,
PostgreSQL's ``pg_dump -Fc`` / ``pg_restore``. The password goes to the tools through the
environment, never on a command line."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
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


def take_backup(url: URL, directory: Path, label: str = "") -> Path:
    """Back up the database at ``url`` into a new file under ``directory``; return its path."""
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
        _run_tool("pg_dump", ["-Fc", "--no-owner", "--file", str(path)], url)
        return path
    raise BackupError(f"dalkit cannot back up a {backend} database; run with backup=False")


def restore_backup(connection: Connection, path: Path) -> None:
    """Restore the database behind ``connection`` to the backup at ``path``, replacing
    everything in it (tables created since the backup included)."""
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    url = connection.engine.url
    if connection.in_transaction():
        connection.rollback()
    if url.get_backend_name() == "sqlite":
        target = _sqlite_file(url)
        with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
        return
    if url.get_backend_name() != "postgresql":
        raise BackupError(f"dalkit cannot restore a {url.get_backend_name()} database")
    _empty_database(connection)
    _run_tool("pg_restore", ["--no-owner", "--single-transaction", "--exit-on-error"], url, path)


def _empty_database(connection: Connection) -> None:
    """Drop every user object, keeping the public schema itself (its owner, grants, comment)."""
    quote = connection.dialect.identifier_preparer.quote
    for (schema,) in connection.execute(_USER_SCHEMAS).all():
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
    for kind, query in _PUBLIC_OBJECTS:
        for row in connection.execute(sa.text(query)).all():
            if kind == "relation":
                statement = f"DROP {_RELATION_KINDS[row[0]]} IF EXISTS public.{row[1]} CASCADE"
            elif kind == "type":
                statement = f"DROP {_TYPE_KINDS[row[0]]} IF EXISTS public.{row[1]} CASCADE"
            else:
                statement = f"DROP {kind} IF EXISTS {row[0]} CASCADE"
            connection.exec_driver_sql(statement)
    connection.commit()


def _sqlite_file(url: URL) -> str:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("an in-memory SQLite database cannot be backed up; use backup=False")
    return database


def _run_tool(tool: str, arguments: list[str], url: URL, stdin_file: Path | None = None) -> None:
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
    if stdin_file is not None:
        command += ["--dbname", environment["PGDATABASE"], str(stdin_file)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        message = (
            result.stderr.strip().replace(url.password or "\0", "***")
            if url.password
            else (result.stderr.strip())
        )
        raise BackupError(f"{tool} failed (exit {result.returncode}): {message}")


def _libpq_environment(url: URL) -> dict[str, str]:
    variables = {
        "PGHOST": url.host or str(url.query.get("host", "") or ""),
        "PGPORT": str(url.port or ""),
        "PGUSER": url.username or "",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.database or "",
    }
    return {key: value for key, value in variables.items() if value}
