"""``explain()``: the plan of a statement, builder or repository read with its parameters still
bound, as text, data and warnings (PostgreSQL ``EXPLAIN (FORMAT JSON)``, SQLite ``EXPLAIN QUERY
PLAN``). ANALYZE of a write runs in a savepoint that is rolled back.

PostgreSQL writes the bound values into the plan (``Filter: (password = 'hunter2'::text)``):
they are masked (`dalkit.observe.plan_values`) in the text, the data and the warnings alike."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from dalkit.errors import ConfigurationError, InvalidQueryError
from dalkit.observe.plan_values import masked, secret_numbers
from dalkit.observe.repo_query import RepositoryQuery
from dalkit.query.builder import QueryBuilder
from dalkit.query.raw_sql import checked_text
from dalkit.query.tenant_guard import TENANT_CHECKED

if TYPE_CHECKING:  # annotations only: sync code never needs the asyncio extension
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["PlanWarning", "QueryPlan", "explain", "explain_async"]

#: a sequential scan reading at least this many rows, keeping at most SELECTIVE of them, is flagged
LARGE_TABLE_ROWS = 10_000
SELECTIVE = 0.1
#: estimated vs actual rows this far apart are flagged, when either is at least MIN_ROWS
MISESTIMATE = 10.0
MIN_ROWS = 100
#: a nested loop whose outer side yields at least this many rows is flagged
NESTED_LOOP_ROWS = 1_000


@dataclasses.dataclass(frozen=True)
class PlanWarning:
    """Something in a plan worth a look.

    Attributes:
        kind: ``seq_scan``, ``misestimate``, ``disk_spill``, ``nested_loop`` (PostgreSQL),
            ``full_scan`` or ``temp_btree`` (SQLite).
        message: What was found and what would help.
        table: The table concerned, when there is one.
    """

    kind: str
    message: str
    table: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class QueryPlan:
    """A statement's plan.

    Attributes:
        text: The plan for people, one node a line.
        data: The plan as the database gave it (PostgreSQL's JSON, SQLite's rows).
        warnings: What in the plan is worth a look.
        backend: ``"postgresql"`` or ``"sqlite"``.
        analyzed: Whether the statement ran (``EXPLAIN ANALYZE``).
    """

    text: str
    data: Any
    warnings: tuple[PlanWarning, ...]
    backend: str
    analyzed: bool = False

    def has_warning(self, kind: str) -> bool:
        """Whether a warning of ``kind`` was found.

        Args:
            kind: A warning kind (see [`PlanWarning`][dalkit.observe.PlanWarning]).

        Returns:
            True when the plan has one.
        """
        return any(w.kind == kind for w in self.warnings)


class _Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: ClauseElement, prefix: str) -> None:
        self.statement = statement
        self.prefix = prefix


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    # compiled by the same compiler as the statement: its parameters stay bound parameters
    text = compiler.process(element.statement, **kw)
    # the result is rows of a plan, not an INSERT/UPDATE/DELETE's outcome, nor the statement's
    # columns (whose types would process the plan's: a DateTime column read "SEARCH t ...")
    compiler.isinsert = compiler.isupdate = compiler.isdelete = False
    compiler._result_columns = []
    return f"{element.prefix} {text}"


def explain(
    connection_or_session: Connection | Session,
    statement: str | ClauseElement | QueryBuilder | RepositoryQuery,
    params: Mapping[str, Any] | None = None,
    *,
    analyze: bool = False,
    buffers: bool = False,
) -> QueryPlan:
    """The plan of ``statement`` on the connection's database, its parameters bound.

    Args:
        connection_or_session: A Connection, or a Session whose connection is used. For an
            AsyncConnection use [`explain_async`][dalkit.observe.explain_async].
        statement: A SQLAlchemy statement; SQL text with ``:named`` parameters given in
            ``params``; a [`QueryBuilder`][dalkit.QueryBuilder]; or a
            [`RepositoryQuery`][dalkit.observe.RepositoryQuery], whose SELECT is the one the
            repository would send (soft-delete and tenant criteria included).
        params: Values of the statement's parameters.
        analyze: Run the statement too (PostgreSQL ``EXPLAIN ANALYZE``; SQLite has no such
            option and ignores it). A write runs in a savepoint that is rolled back.
        buffers: Add buffer usage (PostgreSQL, with ``analyze``).

    Returns:
        The plan as text, as the database's data, and the warnings found in it.

    Raises:
        InvalidQueryError: ``statement`` is none of the above, or SQL text that fails the
            raw SQL checks.
        ConfigurationError: The database is neither PostgreSQL nor SQLite.
    """
    connection = (
        connection_or_session.connection()
        if isinstance(connection_or_session, Session)
        else connection_or_session
    )
    values = dict(params or {})
    clause: Any
    if isinstance(statement, RepositoryQuery):
        clause, bound = statement.prepared(connection)
        values = {**bound, **values}
    elif isinstance(statement, QueryBuilder):
        clause = statement.build()
    elif isinstance(statement, str):
        clause = checked_text(statement, values)
    else:
        clause = statement
    if not isinstance(clause, ClauseElement):
        raise InvalidQueryError(
            "explain() takes SQL text, a SQLAlchemy statement, a QueryBuilder or a RepositoryQuery",
            name=type(statement).__name__,
        )
    backend = connection.dialect.name
    if backend == "postgresql":
        # a plan holds no row of any tenant; EXPLAIN ANALYZE runs the statement, so only a
        # repository's (scoped by its session's listeners above) passes the tenant guard
        scoped = isinstance(statement, RepositoryQuery) or not analyze
        return _explain_postgres(
            connection, clause, values, analyze=analyze, buffers=buffers, scoped=scoped
        )
    if backend == "sqlite":
        return _explain_sqlite(connection, clause, values)
    raise ConfigurationError(f"explain() supports PostgreSQL and SQLite, not {backend}")


async def explain_async(
    connection: AsyncConnection,
    statement: str | ClauseElement | QueryBuilder | RepositoryQuery,
    params: Mapping[str, Any] | None = None,
    *,
    analyze: bool = False,
    buffers: bool = False,
) -> QueryPlan:
    """[`explain`][dalkit.observe.explain] on an AsyncConnection (the work runs in
    ``run_sync``).

    Args:
        connection: The connection to explain on.
        statement: As for [`explain`][dalkit.observe.explain].
        params: Values of the statement's parameters.
        analyze: Run the statement too (PostgreSQL).
        buffers: Add buffer usage (PostgreSQL, with ``analyze``).

    Returns:
        The plan, as from [`explain`][dalkit.observe.explain].
    """
    return await connection.run_sync(explain, statement, params, analyze=analyze, buffers=buffers)


def _explain_postgres(
    connection: Connection,
    clause: ClauseElement,
    values: dict[str, Any],
    *,
    analyze: bool,
    buffers: bool,
    scoped: bool,
) -> QueryPlan:
    run = TENANT_CHECKED if scoped else {}
    options = ["FORMAT JSON"] + (["ANALYZE"] if analyze else []) + (["BUFFERS"] if buffers else [])
    query = _Explain(clause, f"EXPLAIN ({', '.join(options)})")
    if analyze:
        savepoint = connection.begin_nested()
        try:
            raw = connection.execute(query, values, execution_options=run).scalar_one()
        finally:
            savepoint.rollback()
    else:
        raw = connection.execute(query, values, execution_options=run).scalar_one()
    # a number given to a parameter named like a secret, the statement's own (bindparam("pin",
    # ...)) too, is masked wherever the plan writes it
    given = {**clause.compile(dialect=connection.dialect).params, **values}
    data = masked(json.loads(raw) if isinstance(raw, str) else raw, numbers=secret_numbers(given))
    root = data[0]["Plan"]
    rows = _table_rows(
        connection, {n["Relation Name"] for n in _nodes(root) if n.get("Relation Name")}
    )
    warnings = tuple(_postgres_warnings(root, rows))
    return QueryPlan(_plan_text(root), data, warnings, "postgresql", analyze)


def _table_rows(connection: Connection, tables: set[str]) -> dict[str, float]:
    if not tables:
        return {}
    result = connection.execute(
        sa.text(
            "SELECT c.relname, greatest(c.reltuples, coalesce(s.n_live_tup, 0)) "
            "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.relname = ANY(:names) AND c.relkind IN ('r', 'p', 'm')"
        ),
        {"names": sorted(tables)},
    )
    return {name: float(count) for name, count in result}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _plan_text(node: dict[str, Any], depth: int = 0) -> str:
    label = node["Node Type"]
    if node.get("Relation Name"):
        label += f" on {node['Relation Name']}"
    if node.get("Index Name"):
        label += f" using {node['Index Name']}"
    details = f"rows={node.get('Plan Rows')} cost={node.get('Total Cost')}"
    if "Actual Rows" in node:
        details += f" actual rows={node['Actual Rows']} loops={node.get('Actual Loops')}"
    lines = [f"{'  ' * depth}{'-> ' if depth else ''}{label}  ({details})"]
    for key in ("Filter", "Index Cond", "Hash Cond", "Join Filter", "Sort Key"):
        if key in node:
            lines.append(f"{'  ' * (depth + 2)}{key}: {node[key]}")
    for child in node.get("Plans", ()):
        lines.append(_plan_text(child, depth + 1))
    return "\n".join(lines)


def _postgres_warnings(root: dict[str, Any], table_rows: dict[str, float]) -> Iterator[PlanWarning]:
    for node in _nodes(root):
        kind = node["Node Type"]
        table = node.get("Relation Name")
        if kind == "Seq Scan" and table and "Filter" in node:
            total = table_rows.get(table, 0.0)
            if "Actual Rows" in node:
                kept = float(node["Actual Rows"])
                total = max(total, kept + float(node.get("Rows Removed by Filter", 0)))
            else:
                kept = float(node.get("Plan Rows", 0))
            if total >= LARGE_TABLE_ROWS and kept <= SELECTIVE * total:
                yield PlanWarning(
                    "seq_scan",
                    f"sequential scan of {table} (~{total:,.0f} rows) keeps ~{kept:,.0f} rows "
                    f"through the filter {node['Filter']}: an index on the filtered column(s) "
                    "would avoid reading the whole table",
                    table,
                )
        if "Actual Rows" in node:
            planned = float(node.get("Plan Rows", 0))
            actual = float(node["Actual Rows"])
            high, low = max(planned, actual), max(min(planned, actual), 1.0)
            if high >= MIN_ROWS and high / low >= MISESTIMATE:
                yield PlanWarning(
                    "misestimate",
                    f"{kind}{f' on {table}' if table else ''}: estimated {planned:,.0f} rows, "
                    f"got {actual:,.0f}; ANALYZE the table or add extended statistics",
                    table,
                )
        if node.get("Sort Space Type") == "Disk" or "external" in str(node.get("Sort Method", "")):
            yield PlanWarning(
                "disk_spill",
                f"sort spilled to disk ({node.get('Sort Method')}); raise work_mem "
                "or sort fewer rows",
                table,
            )
        if (
            kind == "Hash"
            and max(node.get("Hash Batches", 1), node.get("Original Hash Batches", 1)) > 1
        ):
            yield PlanWarning(
                "disk_spill",
                f"hash split into {node.get('Hash Batches')} batches (spilled to "
                "disk); raise work_mem or hash fewer rows",
                table,
            )
        if kind == "Nested Loop" and node.get("Plans"):
            outer = node["Plans"][0]
            rows = float(outer.get("Actual Rows", outer.get("Plan Rows", 0)))
            rows *= float(outer.get("Actual Loops", 1))
            if rows >= NESTED_LOOP_ROWS:
                yield PlanWarning(
                    "nested_loop",
                    f"nested loop over ~{rows:,.0f} outer rows: the inner side runs once per row; "
                    "an index on the join column or a hash join would serve better",
                    outer.get("Relation Name"),
                )


def _explain_sqlite(
    connection: Connection, clause: ClauseElement, values: dict[str, Any]
) -> QueryPlan:
    # EXPLAIN QUERY PLAN plans against the connection's cached schema and never checks that it
    # is current, nor does the driver's cached statement: an index another connection made
    # since would be missing from the plan. Reading the schema's version reloads a schema
    # that changed, and naming the version makes a statement the driver has not prepared.
    connection.exec_driver_sql("SELECT 1 FROM sqlite_master LIMIT 1").all()
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar()
    prefix = f"EXPLAIN QUERY PLAN /* schema {version} */"
    rows = [
        {"id": r[0], "parent": r[1], "detail": masked(r[3])}
        # EXPLAIN QUERY PLAN never runs the statement: no row of any tenant in it
        for r in connection.execute(
            _Explain(clause, prefix), values, execution_options=TENANT_CHECKED
        )
    ]
    depth: dict[int, int] = {}
    lines, warnings = [], []
    # what a scan may read without a table an index could serve: a subquery or CTE SQLite
    # builds first, and the constant rows of a SELECT without FROM or of VALUES
    built = {"CONSTANT"}
    for row in rows:
        depth[row["id"]] = depth.get(row["parent"], -1) + 1
        lines.append(f"{'  ' * depth[row['id']]}{row['detail']}")
        detail: str = row["detail"]
        if detail.startswith(("CO-ROUTINE ", "MATERIALIZE ")):
            built.add(detail.split(" ", 1)[1])
        words = detail.split()
        if detail.startswith("SCAN ") and " INDEX " not in detail:
            table = words[1]
            if (
                table in built
                or table.startswith("(subquery")
                or words[2:4] == ["CONSTANT", "ROWS"]
            ):
                continue
            warnings.append(
                PlanWarning(
                    "full_scan",
                    f"{detail}: every row of {table} is read; an index on the filtered or "
                    "joined column(s) lets SQLite seek instead",
                    table,
                )
            )
        if "USE TEMP B-TREE FOR" in detail and "ORDER BY" in detail:
            warnings.append(
                PlanWarning(
                    "temp_btree",
                    f"{detail}: rows are sorted after reading; an index matching the ORDER BY "
                    "returns them in order",
                )
            )
    return QueryPlan("\n".join(lines), rows, tuple(warnings), "sqlite", False)
