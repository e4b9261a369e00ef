"""The first sections of the tour: the schema, sessions, translated errors, health and pool stats.

Each is a ``run_*_demo(db, console)`` section, listed in ``dalkit.cli.demo.SECTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from dalkit.cli._render import cell, health_rows, key_value_table
from dalkit.cli.demo_models import DemoBase, Post, User, UserProfile
from dalkit.database import Database
from dalkit.errors import DalkitError, DatabaseError


def run_schema_demo(db: Database, console: Console) -> None:
    """Show the tables the tour created from the declarative models."""
    table = Table(title=Text(f"tables on {db.url}"), title_justify="left")
    table.add_column("table", style="cyan")
    table.add_column("columns")
    table.add_column("keys", style="dim")
    for model_table in DemoBase.metadata.sorted_tables:
        columns = ", ".join(column.name for column in model_table.columns)
        keys = [f"pk({', '.join(c.name for c in model_table.primary_key)})"]
        keys += [f"fk {fk.parent.name} -> {fk.target_fullname}" for fk in model_table.foreign_keys]
        table.add_row(model_table.name, cell(columns), cell("; ".join(keys)))
    console.print(table)


def run_sessions_demo(db: Database, console: Console) -> None:
    """Write users with profiles and posts in one session, then read them back in another."""
    with db.session() as session:
        session.add_all(
            [
                User(
                    email="ada@example.com",
                    name="Ada Lovelace",
                    profile=UserProfile(bio="First programmer", website="https://example.com/ada"),
                    posts=[
                        Post(title="Notes on the Analytical Engine", published=True),
                        Post(title="Bernoulli numbers, step by step"),
                    ],
                ),
                User(
                    email="grace@example.com",
                    name="Grace Hopper",
                    profile=UserProfile(bio="Compilers, and a moth"),
                    posts=[Post(title="Nanoseconds, explained", published=True)],
                ),
                User(email="edsger@example.com", name="Edsger Dijkstra"),
            ]
        )
    console.print(
        "Wrote 3 users, 2 profiles and 3 posts in [bold]one[/] session: "
        "[cyan]with db.session() as session[/] committed when the block ended."
    )
    with db.session() as session:
        rows = session.execute(
            select(
                User.name,
                User.email,
                func.count(Post.id).label("posts"),
                func.count(Post.id).filter(Post.published).label("published"),
            )
            .outerjoin(User.posts)
            .group_by(User.id, User.name, User.email)
            .order_by(User.name)
        ).all()
    table = Table(title="read back in a new session", title_justify="left")
    for column in ("name", "email", "posts", "published"):
        table.add_column(column, justify="right" if column in ("posts", "published") else "left")
    for row in rows:
        table.add_row(*(cell(value) for value in row))
    console.print(table)


def _duplicate_email(db: Database) -> None:
    with db.session() as session:
        session.add(User(email="ada@example.com", name="Another Ada"))


def _post_without_author(db: Database) -> None:
    with db.session() as session:
        session.add(Post(author_id=999_999, title="Nobody wrote this"))


_MISTAKES: list[tuple[str, Callable[[Database], None]]] = [
    ("a second user with ada@example.com", _duplicate_email),
    ("a post whose author does not exist", _post_without_author),
]


def run_errors_demo(db: Database, console: Console) -> None:
    """Break two constraints and show the dalkit errors the driver errors became."""
    for attempt, mistake in _MISTAKES:
        try:
            mistake(db)
        except DatabaseError as exc:
            console.print(_error_panel(attempt, exc))
        else:
            raise DalkitError(f"the demo expected {attempt} to be refused, and it was accepted")
    console.print(
        "Catch [bold]dalkit.UniqueViolationError[/] (or any [bold]dalkit.IntegrityError[/]) "
        "the same way on SQLite and PostgreSQL."
    )


def _error_panel(attempt: str, exc: DatabaseError) -> Panel:
    lineage = [cls.__name__ for cls in type(exc).__mro__]
    rows = {
        "is a": " -> ".join(lineage[: lineage.index("DalkitError") + 1]),
        "sqlstate": exc.sqlstate,
        "constraint": exc.constraint,
        "message": str(exc),
        "__cause__": _qualified(exc.__cause__),
    }
    title = Text.assemble("dalkit raised ", (type(exc).__name__, "bold magenta"))
    return Panel(
        key_value_table("", rows),
        title=title,
        title_align="left",
        subtitle=Text(f"for {attempt}"),
        subtitle_align="left",
    )


def _qualified(obj: object) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def run_health_demo(db: Database, console: Console) -> None:
    """The health check and the pool statistics gathered while the tour ran."""
    health = Table(show_header=False, box=None)
    health.add_column(style="cyan")
    health.add_column()
    for label, value in health_rows(db.health_check()):
        health.add_row(label, value)
    console.print(Panel(health, title="db.health_check()", title_align="left", expand=False))
    console.print(key_value_table("db.pool_stats()", db.pool_stats()))
