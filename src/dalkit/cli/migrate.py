"""``dalkit migrate``: init, new, up, down, current, pending, history, check, lint, sql, restore.

The database is ``--url`` (or DALKIT_DATABASE_URL); an async driver in the URL (asyncpg,
aiosqlite) runs the commands on an AsyncDatabase. Models come from ``--metadata module:attr``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from dalkit import Database
from dalkit.cli._load import load_attribute
from dalkit.cli._relative import LETS_STEPS_THROUGH, refuse_unknown_option
from dalkit.cli._render import FLAG_METAVAR, cell, revision_progress
from dalkit.config import DEFAULT_URL, DatabaseConfig
from dalkit.errors import ConfigurationError, DalkitError
from dalkit.migrations import (
    Finding,
    MigrationError,
    Migrations,
    MigrationSettings,
    RevisionInfo,
    SchemaDriftError,
    UnsafeMigrationError,
    UpgradeResult,
    blocking,
)
from dalkit.migrations.checks import run_all_checks
from dalkit.migrations.scripts import init_directory

if TYPE_CHECKING:
    from dalkit import AsyncDatabase

migrate_app = typer.Typer(
    name="migrate",
    help="Alembic migrations with linting, timeouts, a migration lock and backups.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="DALKIT_DATABASE_URL",
        show_default=DEFAULT_URL,
        help="Database URL; one with a password is better given in the environment.",
    ),
]
DirOption = Annotated[
    Path, typer.Option("--directory", "-d", help="The migration directory (an Alembic one works).")
]
MetadataOption = Annotated[
    str | None,
    typer.Option(
        envvar="DALKIT_MIGRATIONS_METADATA",
        help="module:attribute of your models' MetaData (or declarative Base).",
    ),
]
_ASYNC_DRIVERS = ("asyncpg", "aiosqlite", "psycopg_async")

console = Console()
errors = Console(stderr=True)


def _metadata(spec: str | None) -> sa.MetaData | None:
    if spec is None:
        return None
    value = load_attribute(spec, "--metadata")
    value = getattr(value, "metadata", value)
    if not isinstance(value, sa.MetaData):
        raise ConfigurationError(f"{spec} is not a MetaData or declarative Base")
    return value


@contextmanager
def _migrations(
    url: str | None, directory: Path, metadata: str | None, *, sync: bool = False
) -> Iterator[Migrations[Any]]:
    # parsed as `dalkit doctor` parses it: an '@' in the password read as libpq reads it, and a
    # malformed URL a ConfigurationError (SQLAlchemy's errors show pieces of the password)
    config = DatabaseConfig.coerce(url or DEFAULT_URL)
    # the driver as written (get_driver_name() would load the dialect, an unknown one raising)
    is_async = config.url.drivername.partition("+")[2] in _ASYNC_DRIVERS
    if sync and is_async:  # dalkit picks a sync driver
        backend = config.url.drivername.partition("+")[0]
        config, is_async = (
            dataclasses.replace(config, url=config.url.set(drivername=backend)),
            False,
        )
    db: Database | AsyncDatabase
    if is_async:
        # imported here: without greenlet (no async extra) every other command still works
        from dalkit import AsyncDatabase

        db = AsyncDatabase(config)
    else:
        db = Database(config)
    try:
        yield Migrations(db, directory, _metadata(metadata), settings=MigrationSettings())
    finally:
        if is_async:
            asyncio.run(db.dispose())  # type: ignore[arg-type]
        else:
            db.dispose()


def _call(migrations: Migrations[Any], result: Any) -> Any:
    """The value of a Migrations call: awaited when the database is async, in a loop of its own
    whose pooled connections are closed before it ends (asyncpg ties them to their loop)."""
    if not inspect.iscoroutine(result):
        return result

    async def run() -> Any:
        try:
            return await result
        finally:
            await migrations.db.engine.dispose()

    return asyncio.run(run())


@contextmanager
def _errors(command: str) -> Iterator[None]:
    try:
        yield
    except DalkitError as exc:
        bad_input = isinstance(exc, MigrationError) and exc.bad_input
        if bad_input or isinstance(exc, ConfigurationError):
            # bad input (the docs' exit code 2): what was given is wrong, nothing was tried
            errors.print(f"[red]dalkit migrate {command}:[/]", cell(exc))
            raise typer.Exit(2) from None
        # dalkit's messages never carry the password; a traceback would add nothing useful
        errors.print(f"[red]dalkit migrate {command} failed:[/] {type(exc).__name__}:")
        errors.print(cell(exc))
        raise typer.Exit(1) from None


def _findings_table(findings: list[Finding], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True)
    for column in ("where", "rule", "operation", "problem", "safe recipe"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        rule = cell(finding.rule)
        rule.stylize("yellow" if not finding.blocks else "bold red")
        where = cell(f"{Path(finding.path).name}:{finding.line}")
        problem = finding.problem + (f" [assured: {finding.assured}]" if finding.assured else "")
        table.add_row(where, rule, cell(finding.operation), cell(problem), cell(finding.recipe))
    return table


def _revisions_table(revisions: list[RevisionInfo], title: str, current: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("revision", "down", "kind", "message", ""):
        table.add_column(column)
    for info in revisions:
        marks = " ".join(
            m for m, on in (("head", info.is_head), ("current", info.revision in current)) if on
        )
        table.add_row(
            cell(info.revision),
            cell(", ".join(info.down_revision) or "base"),
            cell(info.kind),
            cell(info.message),
            cell(marks),
        )
    return table


@migrate_app.command()
def init(directory: DirOption = Path("migrations")) -> None:
    """Create the migration directory (versions/, revision template); existing files are kept."""
    with _errors("init"):
        init_directory(directory)
    console.print("migration directory ready:", cell(directory, "cyan"))


@migrate_app.command()
def new(
    message: Annotated[str, typer.Argument(help="What the revision does.")],
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
    metadata: MetadataOption = None,
    sql: Annotated[
        bool, typer.Option("--sql", metavar=FLAG_METAVAR, help="Write a plain .sql revision.")
    ] = False,
    empty: Annotated[
        bool, typer.Option("--empty", metavar=FLAG_METAVAR, help="Do not autogenerate.")
    ] = False,
) -> None:
    """Write a new revision, autogenerated from --metadata; lint it (warnings only)."""
    with _errors("new"), _migrations(url, directory, metadata) as migrations:
        if sql:
            created = migrations.new_sql_revision(message)
        else:
            created = _call(migrations, migrations.revision(message, autogenerate=not empty))
    console.print("wrote", cell(created.path, "cyan"), cell(f"({created.revision})"))
    if created.findings:
        console.print(_findings_table(created.findings, "the linter's warnings (they block `up`)"))


@migrate_app.command()
def up(
    target: Annotated[str, typer.Argument(help="Revision to reach.")] = "heads",
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
    backup: Annotated[
        bool | None,
        typer.Option(
            "--backup/--no-backup",
            metavar=FLAG_METAVAR,
            show_default="on when the database already has revisions",
            help="Back up first; restore it if a revision fails.",
        ),
    ] = None,
    allow_unsafe: Annotated[
        bool,
        typer.Option(
            "--allow-unsafe", metavar=FLAG_METAVAR, help="Run revisions the linter flags."
        ),
    ] = False,
) -> None:
    """Upgrade: lint the pending revisions, back up, run them under the migration lock."""
    with _errors("up"), _migrations(url, directory, None) as migrations:
        if backup is None:
            backup = bool(_call(migrations, migrations.current())) and bool(
                _call(migrations, migrations.pending())
            )
        try:
            result: UpgradeResult = revision_progress(
                console,
                lambda on_step: _call(
                    migrations,
                    migrations.upgrade(
                        target, backup=bool(backup), allow_unsafe=allow_unsafe, on_step=on_step
                    ),
                ),
            )
        except UnsafeMigrationError as exc:
            errors.print(_findings_table(exc.findings, "unsafe operations: nothing was run"))
            errors.print("fix them, mark them safety_assured(reason=...), or pass --allow-unsafe")
            raise typer.Exit(1) from None
    _report(result, "applied")


@migrate_app.command(context_settings=LETS_STEPS_THROUGH)
def down(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help='An id, "base", or "-2" for two steps back (one when left out).')
    ] = "-1",
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
    backup: Annotated[
        bool, typer.Option("--backup/--no-backup", metavar=FLAG_METAVAR, help="Back up first.")
    ] = False,
) -> None:
    """Downgrade to TARGET."""
    refuse_unknown_option(ctx, target)
    with _errors("down"), _migrations(url, directory, None) as migrations:
        result = revision_progress(
            console,
            lambda on_step: _call(
                migrations, migrations.downgrade(target, backup=backup, on_step=on_step)
            ),
        )
    _report(result, "downgraded")


def _report(result: UpgradeResult, verb: str) -> None:
    if result.backup is not None:
        console.print("backup:", cell(result.backup, "cyan"))
    if result.findings:
        console.print(_findings_table(result.findings, "findings run anyway (assured or allowed)"))
    if result.applied:
        console.print(
            f"[green]{verb} {len(result.applied)} revision(s):[/] {', '.join(result.applied)}"
        )
    else:
        console.print("nothing to do: the database is at the target")


@migrate_app.command()
def current(url: UrlOption = None, directory: DirOption = Path("migrations")) -> None:
    """The revision(s) the database is at."""
    with _errors("current"), _migrations(url, directory, None) as migrations:
        heads = _call(migrations, migrations.current())
    console.print(", ".join(heads) if heads else "base (no revision applied)")


@migrate_app.command()
def pending(url: UrlOption = None, directory: DirOption = Path("migrations")) -> None:
    """The revisions `up` would run, in order."""
    with _errors("pending"), _migrations(url, directory, None) as migrations:
        waiting = _call(migrations, migrations.pending())
    if not waiting:
        console.print("nothing pending")
        return
    console.print(_revisions_table(waiting, f"{len(waiting)} pending", ()))


@migrate_app.command()
def history(url: UrlOption = None, directory: DirOption = Path("migrations")) -> None:
    """Every revision, oldest first, with the database's current one marked."""
    with _errors("history"), _migrations(url, directory, None) as migrations:
        revisions = migrations.history()
        heads = _call(migrations, migrations.current())
    console.print(_revisions_table(revisions, "history", tuple(heads)))


@migrate_app.command()
def check(
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
    metadata: MetadataOption = None,
    roundtrip: Annotated[
        bool,
        typer.Option(
            "--roundtrip",
            metavar=FLAG_METAVAR,
            help="On an EMPTY database: single head, up/down/up with the same schema, no "
            "drift, and every downgrade leaving no trace.",
        ),
    ] = False,
) -> None:
    """Check that the database matches the models (exit 1 listing each difference)."""
    with _errors("check"), _migrations(url, directory, metadata, sync=roundtrip) as migrations:
        if roundtrip:
            for name in run_all_checks(migrations):
                console.print(f"[green]ok[/] {name}")
            return
        try:
            _call(migrations, migrations.check())
        except SchemaDriftError as exc:
            errors.print(
                f"[red]{len(exc.differences)} difference(s)[/] between models and database:"
            )
            for difference in exc.differences:
                errors.print(cell(f"  - {difference}"))
            raise typer.Exit(1) from None
    console.print("[green]no drift:[/] the database matches the models")


@migrate_app.command()
def lint(
    revisions: Annotated[str | None, typer.Argument(help='"start:end"; all when left out.')] = None,
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
) -> None:
    """Lint revisions; exit 1 when one would block `up`."""
    with _errors("lint"), _migrations(url, directory, None) as migrations:
        findings = migrations.lint(revisions)
    if not findings:
        console.print("[green]no findings[/]")
        return
    console.print(_findings_table(findings, f"{len(findings)} finding(s)"))
    if blocking(findings):
        raise typer.Exit(1)


@migrate_app.command()
def sql(
    revisions: Annotated[
        str, typer.Argument(help='"start:end"; "head:base" for downgrade SQL.')
    ] = "base:head",
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
    dialect: Annotated[str | None, typer.Option(help="postgresql, sqlite...")] = None,
) -> None:
    """Print the SQL of a range of revisions, without touching the database."""
    with _errors("sql"), _migrations(url, directory, None) as migrations:
        text = migrations.sql(revisions, dialect=dialect)
    typer.echo(text)


@migrate_app.command()
def restore(
    file: Annotated[Path, typer.Argument(help="A backup written by `up --backup`.")],
    url: UrlOption = None,
    directory: DirOption = Path("migrations"),
    yes: Annotated[
        bool, typer.Option("--yes", metavar=FLAG_METAVAR, help="Do not ask for confirmation.")
    ] = False,
) -> None:
    """Replace the database's content with a backup."""
    if not yes:
        typer.confirm(f"replace everything in the database with {file}?", abort=True)
    with _errors("restore"), _migrations(url, directory, None) as migrations:
        _call(migrations, migrations.restore(file))
    console.print("[green]restored[/] from", cell(file))
