"""``dalkit demo``: a tour of dalkit, section by section, on a throwaway SQLite file or ``--url``.

A section is a function ``run_*_demo(db, console)``; :data:`SECTIONS` lists them in order.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from dalkit.cli.demo_basics import (
    run_errors_demo,
    run_health_demo,
    run_schema_demo,
    run_sessions_demo,
)
from dalkit.cli.demo_cache import run_cache_demo
from dalkit.cli.demo_migrations import run_migrations_demo
from dalkit.cli.demo_models import reset_schema
from dalkit.cli.demo_observe import run_observe_demo
from dalkit.cli.demo_repositories import run_repositories_demo
from dalkit.cli.demo_transactions import run_transactions_demo
from dalkit.cli.demo_uow import run_uow_demo
from dalkit.config import SECRET_KEY_ENV
from dalkit.database import Database
from dalkit.errors import ConfigurationError, DalkitError


@dataclasses.dataclass(frozen=True)
class DemoSection:
    """One step of the tour: its heading and the function that shows it."""

    title: str
    run: Callable[[Database, Console], None]


#: The tour, in order. Every section gets a Database on which the demo tables
#: (``demo_models``) exist, and the console to print to. To add a section, import its
#: ``run_*_demo`` function and add an entry; keep "Health and pool" last, so that its
#: statistics cover the whole tour.
SECTIONS: tuple[DemoSection, ...] = (
    DemoSection("Schema", run_schema_demo),
    DemoSection("Sessions", run_sessions_demo),
    DemoSection("Errors", run_errors_demo),
    DemoSection("Transactions", run_transactions_demo),
    DemoSection("Repositories", run_repositories_demo),
    DemoSection("Query cache", run_cache_demo),
    DemoSection("Unit of work", run_uow_demo),
    DemoSection("Migrations", run_migrations_demo),
    DemoSection("Observability", run_observe_demo),
    DemoSection("Health and pool", run_health_demo),
)


def demo(
    url: Annotated[
        str | None,
        typer.Option(
            help="Run the tour on this database instead of a temporary SQLite file; "
            "it drops and recreates its own tables there (demo_users, demo_posts and the "
            "other demo_* ones), creates dalkit's (dalkit_audit_log, dalkit_outbox, "
            "dalkit_inbox) if missing, and leaves them for you to look at. Give it a database "
            "of its own: migrations creating dalkit's tables would find them there.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Take the tour of dalkit: models, sessions, translated errors, health and pool stats."""
    console = Console()
    try:
        with ExitStack() as cleanup:
            if url is None:
                directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="dalkit-"))
                url = f"sqlite:///{Path(directory) / 'demo.db'}"
            # the tour's keyset cursors need a secret; a throwaway one fits a throwaway database
            db = Database(url, secret_key=os.environ.get(SECRET_KEY_ENV) or secrets.token_hex(16))
            cleanup.callback(db.dispose)
            run_tour(db, console)
    except ConfigurationError as exc:
        typer.echo(f"dalkit demo: {exc}", err=True)
        raise typer.Exit(2) from None
    except DalkitError as exc:
        # dalkit's messages never carry the password; the traceback would add nothing useful
        typer.echo(f"dalkit demo stopped: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def run_tour(db: Database, console: Console) -> None:
    """Create the demo tables on ``db``, then run every section in :data:`SECTIONS`."""
    console.print(
        Panel.fit(
            f"A tour of dalkit on [bold]{escape(db.url)}[/]\n"
            f"{len(SECTIONS)} sections: " + ", ".join(s.title for s in SECTIONS),
            title="dalkit demo",
        )
    )
    reset_schema(db)
    for number, section in enumerate(SECTIONS, 1):
        console.rule(f"[bold]{number}. {section.title}", align="left")
        section.run(db, console)
    console.print("\n[bold green]Tour complete.[/]")
    console.print(
        "Next: the RealWorld example app on dalkit (examples/conduit): [bold]make serve[/] runs "
        "it on 127.0.0.1:8000 on SQLite; set DALKIT_DATABASE_URL to run it on PostgreSQL."
    )
