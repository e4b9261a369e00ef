"""``dalkit inspect``: the plan of a statement or a repository read, table statistics, index
advice and query statistics, as Rich tables or ``--json``. Exit code 1 when a plan or the index
advice holds a warning (so CI can gate on it), 2 when the configuration is unusable."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from inspect import iscoroutinefunction
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dalkit.cli._load import load_attribute
from dalkit.cli._render import FLAG_METAVAR, cell
from dalkit.config import DatabaseConfig
from dalkit.database import Database
from dalkit.engine.options import existing_database_only
from dalkit.errors import ConfigurationError, ConnectionFailedError, DalkitError
from dalkit.observe import RepositoryQuery, index_advice, install, table_stats
from dalkit.observe import explain as explain_plan

inspect_app = typer.Typer(
    name="inspect",
    help="Query plans, table statistics, index advice and query statistics.",
    no_args_is_help=True,
)

URL_ENV = "DALKIT_DATABASE_URL"
UrlOption = Annotated[
    str | None,
    typer.Option(
        envvar=URL_ENV,
        help="Database URL (required); one with a password is better given in the environment.",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", metavar=FLAG_METAVAR, help="Print a JSON document instead of tables."),
]
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@contextmanager
def _database(url: str | None) -> Iterator[Database]:
    try:
        if not url:
            raise ConfigurationError(f"give the database with --url or {URL_ENV}")
        # a missing SQLite file refused, never created, as by `dalkit migrate current` and
        # `dalkit doctor` (a SQLite URI, file:...?uri=true, is read as SQLite reads it)
        db = Database(existing_database_only(DatabaseConfig.coerce(url)))
    except (ConfigurationError, ConnectionFailedError) as exc:
        typer.echo(f"dalkit inspect: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        yield db
    except DalkitError as exc:
        typer.echo(f"dalkit inspect: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()


def _param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise typer.BadParameter(f"expected name=value, got {text!r}", param_hint="--param")
    if _NUMBER.fullmatch(raw):
        return name, float(raw) if "." in raw else int(raw)
    return name, None if raw.lower() == "null" else raw


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@inspect_app.command()
def explain(
    sql: Annotated[
        str | None,
        typer.Argument(help="The statement, with :named parameters (or use --repository)."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="A parameter as name=value (a filter, with --repository)."
        ),
    ] = None,
    repository: Annotated[
        str | None,
        typer.Option(
            help="Explain a repository read instead: module:RepositoryClass, filters as -p, "
            "as list() sends it."
        ),
    ] = None,
    sort: Annotated[str | None, typer.Option(help="The read's sort, with --repository.")] = None,
    limit: Annotated[int | None, typer.Option(help="The read's limit, with --repository.")] = None,
    analyze: Annotated[
        bool,
        typer.Option(
            "--analyze", metavar=FLAG_METAVAR, help="Run it (PostgreSQL; writes are rolled back)."
        ),
    ] = False,
    buffers: Annotated[
        bool, typer.Option("--buffers", metavar=FLAG_METAVAR, help="Add buffer usage (PostgreSQL).")
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the plan of SQL, or of a repository read, and what in it deserves a look."""
    params = dict(_param(p) for p in param or ())
    if (sql is None) == (repository is None):
        typer.echo("dalkit inspect explain: give either SQL or --repository", err=True)
        raise typer.Exit(2)
    with _database(url) as db, db.connection() as conn:
        if repository is not None:
            read = RepositoryQuery(_load(repository, "explain"), sort=sort, limit=limit, **params)
            plan = explain_plan(conn, read, analyze=analyze, buffers=buffers)
        else:
            plan = explain_plan(conn, str(sql), params, analyze=analyze, buffers=buffers)
    if as_json:
        _print(
            {
                "text": plan.text,
                "data": plan.data,
                "warnings": [{"kind": w.kind, "message": w.message} for w in plan.warnings],
            }
        )
    else:
        console = Console()
        # SQLite plans some statements with no step at all (an INSERT ... VALUES)
        shown = plan.text or "(the database gave no plan steps for this statement)"
        console.print(shown, markup=False, highlight=False)
        for warning in plan.warnings:
            console.print(cell(f"warning ({warning.kind}): {warning.message}"), style="yellow")
    raise typer.Exit(1 if plan.warnings else 0)


@inspect_app.command()
def tables(
    table: Annotated[str | None, typer.Argument(help="Only this table.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rows, scans, vacuum times, sizes and indexes of each table."""
    with _database(url) as db, db.connection() as conn:
        stats = table_stats(conn, table)
    if as_json:
        _print([s.as_dict() for s in stats])
        return
    columns = ("table", "rows", "dead_rows", "seq_scans", "index_scans", "total_bytes")
    view = Table(*columns, "last analyze", "indexes", title="Tables", title_justify="left")
    for s in stats:
        analyzed = max((d for d in (s.last_analyze, s.last_autoanalyze) if d), default=None)
        view.add_row(
            *(cell(getattr(s, c)) for c in columns), cell(analyzed), cell(", ".join(s.indexes))
        )
    Console().print(view)


@inspect_app.command()
def indexes(
    url: UrlOption = None,
    min_rows: Annotated[
        int, typer.Option(help="Smallest table worth an index for its scans.")
    ] = 10_000,
    as_json: JsonOption = False,
) -> None:
    """Indexes to add (unindexed foreign keys, filtered columns of scanned tables) or drop \
(duplicates, unused); exit 1 when any advice is of severity "warn"."""
    with _database(url) as db, db.connection() as conn:
        advice = index_advice(conn, None, min_rows=min_rows)
    if as_json:
        _print([a.as_dict() for a in advice])
    else:
        Console().print(advice_table(advice))
    raise typer.Exit(1 if any(a.severity == "warn" for a in advice) else 0)


def advice_table(advice: list[Any]) -> Table:
    """Index advice as a Rich table (shared with ``dalkit demo``)."""
    view = Table("severity", "kind", "table", "columns", "reason", "ddl", title="Index advice")
    view.title_justify = "left"
    for a in advice:
        view.add_row(
            cell(a.severity),
            cell(a.kind),
            cell(a.table),
            cell(", ".join(a.columns)),
            cell(a.reason),
            cell(a.ddl),
        )
    if not advice:
        view.add_row(cell("-"), cell("no advice"), *(cell(None) for _ in range(4)))
    return view


@inspect_app.command()
def queries(
    metrics_url: Annotated[
        str | None, typer.Option(help="Read a running app's /metrics (dalkit's collector).")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="A one-off run: module:function, called with a Database."),
    ] = None,
    url: UrlOption = None,
    top: Annotated[int, typer.Option(min=0, help="How many statement shapes to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Query statistics: per operation from a metrics endpoint, or per statement shape from a \
one-off run of your function."""
    if (metrics_url is None) == (run is None):
        typer.echo("dalkit inspect queries: give --metrics-url or --run", err=True)
        raise typer.Exit(2)
    if metrics_url is not None:
        _show_queries(_from_metrics(metrics_url), as_json)
        return
    function = _load(str(run))
    with _database(url) as db:
        if iscoroutinefunction(function):  # called with an AsyncDatabase, and awaited
            asyncio.run(_run_async(function, db.config, top, as_json))
            return
        observer = install(db.engine)
        try:
            function(db)
        finally:
            # a run that failed shows what it ran too, the failed statement among them; its
            # error is reported after (exit code 2 for a database error)
            _show_queries(observer.query_stats(top), as_json)


async def _run_async(
    function: Callable[..., Any], config: DatabaseConfig, top: int, as_json: bool
) -> None:
    """``await function(AsyncDatabase)`` on the database of ``config``, then its statistics
    (shown when it raised too, as for a sync function)."""
    from dalkit.database_async import AsyncDatabase  # here: the CLI runs without greenlet

    db = AsyncDatabase(config)
    observer = install(db.engine)
    try:
        await function(db)
    finally:
        _show_queries(observer.query_stats(top), as_json)
        await db.dispose()


def _show_queries(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print(rows)
        return
    view = Table(*(rows[0] if rows else ("no queries",)), title="Queries", title_justify="left")
    for row in rows:
        view.add_row(*(cell(v) for v in row.values()))
    Console().print(view)


def _load(target: str, command: str = "queries") -> Callable[..., Any]:
    option = "--repository" if command == "explain" else "--run"
    try:
        function = load_attribute(target, option)
    except ConfigurationError as exc:
        typer.echo(f"dalkit inspect {command}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not callable(function):
        typer.echo(f"dalkit inspect {command}: {target!r} is not callable", err=True)
        raise typer.Exit(2)
    return function  # type: ignore[no-any-return]


def _metrics_request(url: str) -> tuple[urllib.request.Request, str]:
    """The request for ``url``, whose user and password (if any) go in a Basic Authorization
    header, and the URL as shown: without them, which urllib would take for the host, and
    with the values of its query masked (``?token=...``)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)))
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    masked = urllib.parse.urlencode([(key, "***") for key, _ in query], safe="*")
    shown = urllib.parse.urlunsplit(parts._replace(netloc=host, query=masked, fragment=""))
    if parts.username is not None or parts.password is not None:
        pair = f"{urllib.parse.unquote(parts.username or '')}:"
        pair += urllib.parse.unquote(parts.password or "")
        # unredirected: urllib copies a plain header into a redirect to any host
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(pair.encode()).decode()
        )
    return request, shown


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follows a redirect with the credentials only to the same scheme, host and port: a
    metrics endpoint redirecting elsewhere does not get them passed on."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        """The redirected request, with the credentials when it stays on their origin."""
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth is not None and _origin(newurl) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


def _from_metrics(url: str) -> list[dict[str, Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    if not url.startswith(("http://", "https://")):
        typer.echo("dalkit inspect queries: --metrics-url must be an http(s) URL", err=True)
        raise typer.Exit(2)
    try:
        request, shown = _metrics_request(url)
    except ValueError:  # a port that is no number
        typer.echo("dalkit inspect queries: --metrics-url is not a valid URL", err=True)
        raise typer.Exit(2) from None
    try:
        opener = urllib.request.build_opener(_SameOriginAuth)
        with opener.open(request, timeout=10) as response:
            text = response.read().decode()
        # parsed in full here: the parser is lazy, and raises on the first line it cannot read
        families = list(text_string_to_metric_families(text))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # it holds the response, and its socket
        reason = str(exc) if isinstance(exc, OSError) else type(exc).__name__
        typer.echo(f"dalkit inspect queries: cannot read {shown}: {reason}", err=True)
        raise typer.Exit(2) from None
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for family in families:
        if family.name not in ("dalkit_query_duration_seconds", "dalkit_query_errors"):
            continue
        for sample in family.samples:
            key = (sample.labels.get("database", ""), sample.labels.get("operation", ""))
            row = found.setdefault(key, {"database": key[0], "operation": key[1]})
            if sample.name == "dalkit_query_errors_total":  # one sample per error class
                row["errors"] = row.get("errors", 0) + int(sample.value)
            elif sample.name.endswith("_count"):
                row["count"] = int(sample.value)
            elif sample.name.endswith("_sum"):
                row["total_ms"] = round(sample.value * 1000.0, 3)
    for row in found.values():
        row.setdefault("count", 0)
        row.setdefault("errors", 0)
        row["mean_ms"] = (
            round(row.get("total_ms", 0.0) / row["count"], 3) if row.get("count") else 0
        )
    return sorted(found.values(), key=lambda r: -float(r.get("total_ms", 0.0)))
