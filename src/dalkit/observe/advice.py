"""``index_advice()``: indexes to add or drop, each with its reason, evidence and DDL.

Foreign keys with no index and duplicate or prefix-redundant indexes come from the schema;
large tables read by filters on unindexed columns come from PostgreSQL's scan counters, the
statements ``query_stats()`` saw (and pg_stat_statements' when it is loaded) and the columns
repositories declare ``filterable``/``sortable``; unused indexes from ``pg_stat_user_indexes``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dalkit.errors import ConfigurationError
from dalkit.observe.index_schema import Ddl, Table, read_schema, serves
from dalkit.observe.install import Observer
from dalkit.query.tenant_guard import TENANT_CHECKED

if TYPE_CHECKING:  # annotations only: sync code never needs the asyncio extension
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["IndexAdvice", "index_advice", "index_advice_async"]

#: tables with fewer rows are never worth an index for their scans
MIN_ROWS = 10_000
#: PostgreSQL: sequential scans of a table before its filters are looked at
MIN_SEQ_SCANS = 20
#: PostgreSQL: scans of a table before an index never used on it is called unused
MIN_TABLE_SCANS = 50


_COMPARISONS = r"=|<|>|!=|<>|\bIN\b|\bLIKE\b|\bILIKE\b|\bBETWEEN\b|\bIS\b"


@dataclasses.dataclass(frozen=True)
class IndexAdvice:
    """One piece of advice about an index to add or drop.

    Attributes:
        kind: ``missing_fk_index``, ``unindexed_filter``, ``seq_scans``, ``unused_index`` or
            ``duplicate_index``.
        table: The table concerned.
        columns: The columns of the index to add (or of the one to drop).
        reason: Why, in a sentence.
        evidence: The figures behind it (rows, scans, statements seen, repositories).
        ddl: The statement that follows the advice, or None.
        severity: ``warn`` (act on it) or ``info``.
    """

    kind: str
    table: str
    columns: tuple[str, ...]
    reason: str
    evidence: dict[str, Any]
    ddl: str | None
    severity: str = "warn"

    def as_dict(self) -> dict[str, Any]:
        """The advice as plain data (for JSON output)."""
        return {**dataclasses.asdict(self), "columns": list(self.columns)}


def index_advice(
    connection: Connection,
    observer: Observer | None = None,
    repositories: Iterable[type[Any]] | None = None,
    *,
    min_rows: int = MIN_ROWS,
) -> list[IndexAdvice]:
    """Advice for the tables of the connection's default schema.

    Args:
        connection: A PostgreSQL or SQLite connection.
        observer: The database's [`Observer`][dalkit.observe.Observer]: the statements its
            query statistics saw are evidence of filtered columns.
        repositories: Repository classes whose ``filterable``/``sortable`` columns count as
            filtered; defaults to every Repository and AsyncRepository subclass defined so far.
        min_rows: Tables with fewer rows are never worth an index for their scans.

    Returns:
        The advice, schema problems first.

    Raises:
        ConfigurationError: The database is neither PostgreSQL nor SQLite.
    """
    backend = connection.dialect.name
    if backend not in ("postgresql", "sqlite"):
        raise ConfigurationError(f"index_advice() supports PostgreSQL and SQLite, not {backend}")
    tables = read_schema(connection)
    ddl = Ddl(connection)
    advice = list(_missing_fk_indexes(tables, ddl))
    advice += _redundant_indexes(tables, ddl)
    # (evidence key, statement): where each statement was seen
    statements = (
        [("statements", s["statement"]) for s in observer.query_stats(None)] if observer else []
    )
    declared = _declared_columns(repositories)
    if backend == "postgresql":
        statements += [("pg_stat_statements", s) for s in _pg_stat_statements(connection)]
        advice += _postgres_scans(connection, tables, ddl, statements, declared, min_rows)
        advice += _postgres_unused(connection, tables, ddl)
    else:
        advice += _sqlite_filters(connection, tables, ddl, statements, min_rows)
    return advice


async def index_advice_async(
    connection: AsyncConnection,
    observer: Observer | None = None,
    repositories: Iterable[type[Any]] | None = None,
    *,
    min_rows: int = MIN_ROWS,
) -> list[IndexAdvice]:
    """``index_advice`` on an AsyncConnection; the arguments and result are the same."""
    return await connection.run_sync(index_advice, observer, repositories, min_rows=min_rows)


def _missing_fk_indexes(tables: dict[str, Table], ddl: Ddl) -> Iterator[IndexAdvice]:
    for table in tables.values():
        for columns in table.foreign_keys:
            if columns and not table.covered(columns):
                yield IndexAdvice(
                    "missing_fk_index",
                    table.name,
                    columns,
                    f"foreign key {table.name}({', '.join(columns)}) has no index: deleting or "
                    "updating a referenced row scans the whole table, and joins on it cannot seek",
                    {"foreign_key": list(columns)},
                    ddl.create(table.name, columns),
                )


def _redundant_indexes(tables: dict[str, Table], ddl: Ddl) -> Iterator[IndexAdvice]:
    for table in tables.values():
        for index in table.indexes:
            if index.get("unique") or index.get("duplicates_constraint"):
                continue
            columns = tuple(index["column_names"])
            for other in table.indexes:
                other_columns = tuple(other["column_names"])
                if other is index or not serves(index, other):
                    continue
                same = other_columns == columns
                # of two indexes serving each other, advise dropping one: the later name
                mutual = same and not other.get("unique") and serves(other, index)
                if mutual and other["name"] > index["name"]:
                    continue
                yield IndexAdvice(
                    "duplicate_index",
                    table.name,
                    columns,
                    f"index {index['name']} {'duplicates' if same else 'is a prefix of'} "
                    f"{other['name']} ({', '.join(other_columns)}), which serves the same lookups",
                    {"index": index["name"], "covered_by": other["name"]},
                    ddl.drop(index["name"]),
                )
                break


def _filtered_columns(statement: str, table: str) -> list[str]:
    """Columns of ``table`` compared in the WHERE clause of ``statement`` (SQLAlchemy qualifies
    them as ``table.column``)."""
    if not re.search(rf'\b(FROM|JOIN)\s+"?{re.escape(table)}"?(\s|$)', statement, re.I):
        return []
    where = re.split(r"\bWHERE\b", statement, maxsplit=1, flags=re.I)
    if len(where) < 2:
        return []
    clause = re.split(r"\b(ORDER BY|GROUP BY|LIMIT|OFFSET|FOR UPDATE)\b", where[1], flags=re.I)[0]
    pattern = rf'"?{re.escape(table)}"?\."?(\w+)"?\s*({_COMPARISONS})'
    return list(dict.fromkeys(m.group(1) for m in re.finditer(pattern, clause, re.I)))


def _declared_columns(repositories: Iterable[type[Any]] | None) -> dict[str, dict[str, set[str]]]:
    """``table -> column -> names of the repositories declaring it filterable or sortable``."""
    if repositories is None:
        # every repository class, sync or async, SQL or in-memory, derives from this base
        from dalkit.repository.base import RepositoryBase

        repositories = _subclasses(RepositoryBase)
    declared: dict[str, dict[str, set[str]]] = {}
    for repository in repositories:
        table = getattr(getattr(repository, "model", None), "__table__", None)
        if table is None:
            continue
        mapper = sa.inspect(repository.model)
        for attribute in ("filterable", "sortable"):
            for name in getattr(repository, attribute, None) or ():
                prop = mapper.attrs.get(name) if isinstance(name, str) else None
                columns = getattr(prop, "columns", None)
                if columns and isinstance(columns[0], sa.Column):
                    by_column = declared.setdefault(table.name, {})
                    by_column.setdefault(columns[0].name, set()).add(repository.__name__)
    return declared


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _candidates(
    table: Table, statements: list[tuple[str, str]], declared: dict[str, dict[str, set[str]]]
) -> dict[str, dict[str, Any]]:
    """Unindexed columns worth an index, with why: statements seen filtering on them first,
    else what repositories declare."""
    found: dict[str, dict[str, Any]] = {}
    for source, statement in statements:
        for column in _filtered_columns(statement, table.name):
            if column in table.columns and not table.covered((column,)):
                seen = found.setdefault(column, {}).setdefault(source, [])
                if len(seen) < 3:
                    seen.append(statement[:300])
    for column, repositories in declared.get(table.name, {}).items():
        if column in found:
            found[column]["repositories"] = sorted(repositories)
        elif not found and not table.covered((column,)):
            found.setdefault(column, {})["repositories"] = sorted(repositories)
    return found


def _postgres_scans(
    connection: Connection,
    tables: dict[str, Table],
    ddl: Ddl,
    statements: list[tuple[str, str]],
    declared: dict[str, dict[str, set[str]]],
    min_rows: int,
) -> Iterator[IndexAdvice]:
    connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    rows = connection.execute(
        sa.text(
            "SELECT relname, n_live_tup, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND n_live_tup >= :rows AND seq_scan >= :scans "
            "AND seq_scan > coalesce(idx_scan, 0)"
        ),
        {"rows": min_rows, "scans": MIN_SEQ_SCANS},
    ).all()
    for name, live, seq_scans, idx_scans in rows:
        table = tables.get(name)
        if table is None:
            continue
        evidence = {"rows": int(live), "seq_scans": int(seq_scans), "index_scans": int(idx_scans)}
        candidates = _candidates(table, statements, declared)
        if not candidates:
            yield IndexAdvice(
                "seq_scans",
                name,
                (),
                f"{name} ({live:,} rows) was read by {seq_scans:,} sequential scans and "
                f"{idx_scans:,} index scans; no statement seen names the filtered columns: "
                "run the workload with query_stats on, or look at pg_stat_statements",
                evidence,
                None,
                "info",
            )
        for column, why in candidates.items():
            yield IndexAdvice(
                "unindexed_filter",
                name,
                (column,),
                f"{name} ({live:,} rows) was read by {seq_scans:,} sequential scans, and "
                f"{name}.{column}, which has no index, is filtered on",
                {**evidence, **why},
                ddl.create(name, (column,)),
            )


def _postgres_unused(
    connection: Connection, tables: dict[str, Table], ddl: Ddl
) -> Iterator[IndexAdvice]:
    rows = connection.execute(
        sa.text(
            "SELECT s.relname, s.indexrelname, t.seq_scan + coalesce(t.idx_scan, 0), "
            "pg_relation_size(s.indexrelid) FROM pg_stat_user_indexes s "
            "JOIN pg_index i ON i.indexrelid = s.indexrelid "
            "JOIN pg_stat_user_tables t ON t.relid = s.relid "
            "WHERE s.schemaname = current_schema() AND s.idx_scan = 0 AND NOT i.indisunique "
            "AND NOT i.indisprimary AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) "
            "AND t.seq_scan + coalesce(t.idx_scan, 0) >= :scans ORDER BY 1, 2"
        ),
        {"scans": MIN_TABLE_SCANS},
    ).all()
    for table_name, index_name, table_scans, size in rows:
        table = tables.get(table_name)
        index = next((i for i in table.indexes if i["name"] == index_name), None) if table else None
        yield IndexAdvice(
            "unused_index",
            table_name,
            tuple(index["column_names"]) if index else (),
            f"index {index_name} was never used while {table_name} was scanned "
            f"{table_scans:,} times; it slows every write and takes {size:,} bytes",
            {"index": index_name, "table_scans": int(table_scans), "bytes": int(size)},
            ddl.drop(index_name),
            "info",
        )


def _pg_stat_statements(connection: Connection) -> list[str]:
    present = connection.execute(
        sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    ).first()
    if present is None:
        return []
    try:
        with connection.begin_nested():
            return list(
                connection.execute(
                    sa.text(
                        "SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM "
                        "pg_database WHERE datname = current_database()) "
                        "ORDER BY total_exec_time DESC LIMIT 50"
                    )
                ).scalars()
            )
    except DBAPIError:  # installed but not in shared_preload_libraries
        return []


def _sqlite_filters(
    connection: Connection,
    tables: dict[str, Table],
    ddl: Ddl,
    statements: list[tuple[str, str]],
    min_rows: int,
) -> Iterator[IndexAdvice]:
    quote = connection.dialect.identifier_preparer.quote_identifier
    for table in tables.values():
        candidates = _candidates(table, statements, {})
        if not candidates:
            continue
        # the name came from the schema, quoted; the size counts every tenant's rows
        count = sa.text(f"SELECT count(*) FROM {quote(table.name)}")
        rows = connection.execute(count, execution_options=TENANT_CHECKED).scalar_one()
        if rows < min_rows:
            continue
        for column, why in candidates.items():
            yield IndexAdvice(
                "unindexed_filter",
                table.name,
                (column,),
                f"{table.name} ({rows:,} rows) is filtered on {column}, which has no index: "
                "each such statement reads the whole table",
                {"rows": int(rows), **why},
                ddl.create(table.name, (column,)),
            )
