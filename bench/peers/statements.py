"""Counting the statements a peer sends for one call, on the server: ``log_statement='all'``
for the bench database while the counts are taken, then the new lines of the server's log."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from bench.peers.base import PeerError, Target

# '%m [%p] ' is PostgreSQL's default log_line_prefix; parameters come on DETAIL lines after
_LOGGED = re.compile(r"\[(\d+)\][^\n]*?LOG:\s+(?:statement|execute [^:]*):\s?(.*)")
_POOL_RESET = "pg_advisory_unlock_all"


class StatementLog:
    """Opened on a server whose log this process can read; :meth:`count` then reports what one
    call sent, as short kinds (``BEGIN``, ``SELECT``, ...) in order."""

    def __init__(self, target: Target) -> None:
        self.target = target
        with psycopg.connect(target.conninfo(), autocommit=True) as connection:
            row = connection.execute(
                "SELECT rolsuper, current_setting('data_directory'), pg_current_logfile() "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        if row is None or not row[0]:
            raise PeerError("counting statements needs a superuser (log_statement is one's)")
        data_dir, current = Path(row[1]), row[2]
        # the logging collector's file, else the stderr file of dalkit's own test harness
        candidates = [data_dir / current] if current else []
        candidates.append(data_dir.parent / "server.log")
        for path in candidates:
            try:
                with path.open("rb"):
                    self.path = path
                    break
            except OSError:
                continue
        else:
            raise PeerError("the server's log file is not readable from this process")

    @contextmanager
    def enabled(self) -> Iterator[None]:
        """Every connection opened inside the block logs its statements; those opened before
        (and after) do not, so timed runs never pay for logging."""
        name = sql.Identifier(self.target.database)
        with psycopg.connect(self.target.conninfo(), autocommit=True) as connection:
            connection.execute(sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(name))
            try:
                yield
            finally:
                connection.execute(sql.SQL("ALTER DATABASE {} RESET log_statement").format(name))

    def count(self, call: Callable[[], object]) -> list[str]:
        start = self.path.stat().st_size
        call()
        with self.path.open("rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", errors="replace")
        return [_kind(match.group(2)) for match in _LOGGED.finditer(text)]


def _kind(statement: str) -> str:
    text = statement.strip()
    if _POOL_RESET in text:
        return "pool reset"
    if not text.strip(";").strip():
        return "; (ping)"
    return text.split(None, 1)[0].upper().rstrip(";")
