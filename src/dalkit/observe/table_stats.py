"""``table_stats()``: what the database knows about its tables. PostgreSQL: live and dead rows,
sequential vs index scans, (auto)vacuum and analyze times, sizes. SQLite: rows, pages (when
``dbstat`` is compiled in) and indexes. Table names are bound or checked, never pasted."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dalkit.errors import ConfigurationError, InvalidQueryError
from dalkit.query.tenant_guard import TENANT_CHECKED

if TYPE_CHECKING:  # annotations only: sync code never needs the asyncio extension
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["TableStats", "table_stats", "table_stats_async"]


@dataclasses.dataclass(frozen=True)
class TableStats:
    """One table's statistics; figures a backend does not keep are ``None``.

    Attributes:
        table: The table's name.
        rows: Its row count (an estimate on PostgreSQL).
        indexes: The names of its indexes.
        schema: Its schema.
        dead_rows: Dead tuples waiting for VACUUM.
        seq_scans: Sequential scans since the statistics were reset.
        seq_rows_read: Rows those scans read.
        index_scans: Index scans since the statistics were reset.
        last_vacuum: The last manual VACUUM.
        last_autovacuum: The last autovacuum.
        last_analyze: The last manual ANALYZE.
        last_autoanalyze: The last autoanalyze.
        total_bytes: The table's size with its indexes and TOAST.
        index_bytes: The size of its indexes.
        pages: Its size in pages (SQLite).

    Examples:
        ```python test="skip"
        (posts,) = db.table_stats("posts")
        print(posts.rows, posts.seq_scans, posts.total_bytes)
        ```
    """

    table: str
    rows: int
    indexes: tuple[str, ...]
    schema: str | None = None
    dead_rows: int | None = None
    seq_scans: int | None = None
    seq_rows_read: int | None = None
    index_scans: int | None = None
    last_vacuum: datetime | None = None
    last_autovacuum: datetime | None = None
    last_analyze: datetime | None = None
    last_autoanalyze: datetime | None = None
    total_bytes: int | None = None
    index_bytes: int | None = None
    pages: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The statistics as plain data, times as ISO 8601 text (for JSON output).

        Returns:
            The fields by name.
        """
        values = dataclasses.asdict(self)
        values["indexes"] = list(self.indexes)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


_POSTGRES = """
SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, s.seq_scan, s.seq_tup_read,
       s.idx_scan, s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       pg_total_relation_size(s.relid), pg_indexes_size(s.relid),
       ARRAY(SELECT i.indexrelname::text FROM pg_stat_user_indexes i
             WHERE i.relid = s.relid ORDER BY i.indexrelname)
FROM pg_stat_user_tables s
"""


def table_stats(connection: Connection, table: str | None = None) -> list[TableStats]:
    """Statistics of every user table, or of ``table`` only.

    Args:
        connection: A PostgreSQL or SQLite connection.
        table: One table's name, or None for every user table.

    Returns:
        The statistics, largest table first on PostgreSQL, by name on SQLite.

    Raises:
        InvalidQueryError: ``table`` is not a table name, or no such table exists.
    """
    if table is not None and (not isinstance(table, str) or not table):
        raise InvalidQueryError("table must be a table name", name=str(table))
    backend = connection.dialect.name
    if backend == "postgresql":
        found = _postgres(connection, table)
    elif backend == "sqlite":
        found = _sqlite(connection, table)
    else:
        raise ConfigurationError(f"table_stats() supports PostgreSQL and SQLite, not {backend}")
    if table is not None and not found:
        raise InvalidQueryError(f"no table named {table[:60]!r}", name=table)
    return found


async def table_stats_async(
    connection: AsyncConnection, table: str | None = None
) -> list[TableStats]:
    """[`table_stats`][dalkit.observe.table_stats] on an AsyncConnection.

    Args:
        connection: A PostgreSQL or SQLite connection.
        table: One table's name, or None for every user table.

    Returns:
        The statistics.
    """
    return await connection.run_sync(table_stats, table)


def _postgres(connection: Connection, table: str | None) -> list[TableStats]:
    # statistics are a snapshot per transaction: read fresh ones
    connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    if table is None:
        rows = connection.execute(
            sa.text(_POSTGRES + " ORDER BY pg_total_relation_size(s.relid) DESC, s.relname")
        )
    else:
        rows = connection.execute(
            sa.text(_POSTGRES + " WHERE s.relname = :table"), {"table": table}
        )
    return [
        TableStats(
            table=r[1],
            schema=r[0],
            rows=int(r[2]),
            dead_rows=int(r[3]),
            seq_scans=int(r[4] or 0),
            seq_rows_read=int(r[5] or 0),
            index_scans=int(r[6] or 0),
            last_vacuum=r[7],
            last_autovacuum=r[8],
            last_analyze=r[9],
            last_autoanalyze=r[10],
            total_bytes=int(r[11]),
            index_bytes=int(r[12]),
            indexes=tuple(r[13]),
        )
        for r in rows
    ]


def _sqlite(connection: Connection, table: str | None) -> list[TableStats]:
    names = (
        connection.execute(
            sa.text(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND (:table IS NULL OR name = :table) ORDER BY name"
            ),
            {"table": table},
        )
        .scalars()
        .all()
    )
    quote = connection.dialect.identifier_preparer.quote_identifier
    pages = _sqlite_pages(connection)
    found = []
    for name in names:
        # the name came from sqlite_master, and is quoted as an identifier; a table's size
        # counts every tenant's rows, which the tenant guard is told
        count = sa.text(f"SELECT count(*) FROM {quote(name)}")
        rows = connection.execute(count, execution_options=TENANT_CHECKED).scalar_one()
        indexes = (
            connection.execute(
                sa.text("SELECT name FROM pragma_index_list(:table) ORDER BY name"), {"table": name}
            )
            .scalars()
            .all()
        )
        total = pages.get(name) if pages is not None else None
        index_bytes = sum(pages.get(i, (0, 0))[1] for i in indexes) if pages is not None else None
        found.append(
            TableStats(
                table=name,
                rows=int(rows),
                indexes=tuple(indexes),
                pages=total[0] if total else None,
                total_bytes=(total[1] if total else 0) + (index_bytes or 0)
                if pages is not None
                else None,
                index_bytes=index_bytes,
            )
        )
    return found


def _sqlite_pages(connection: Connection) -> dict[str, tuple[int, int]] | None:
    """``name -> (pages, bytes)`` from the ``dbstat`` table, or ``None`` when SQLite lacks it."""
    try:
        with connection.begin_nested():
            rows = connection.execute(
                sa.text("SELECT name, count(*), sum(pgsize) FROM dbstat GROUP BY name")
            ).all()
    except DBAPIError:
        return None
    return {name: (int(count), int(size)) for name, count, size in rows}
