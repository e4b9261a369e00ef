"""The Typer application: one command per command-group module, registered here."""

from __future__ import annotations

import typer

from dalkit.cli.demo import demo
from dalkit.cli.doctor import doctor
from dalkit.cli.inspect import inspect_app
from dalkit.cli.migrate import migrate_app
from dalkit.cli.outbox import outbox_app

app = typer.Typer(
    name="dalkit",
    help=(
        "dalkit: check a database's health and pool, take the tour, deliver the outbox, "
        "inspect queries and tables, run migrations."
    ),
    no_args_is_help=True,
    add_completion=False,
    # locals would include database URLs, passwords and all
    pretty_exceptions_show_locals=False,
)
app.command()(doctor)
app.command()(demo)
app.add_typer(outbox_app)
app.add_typer(inspect_app)
app.add_typer(migrate_app)
