"""The repositories section of the tour: filters, both paginations, a bulk load with a progress
bar, the query builder, and injection attempts refused with typed errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit.cli._render import cell
from dalkit.cli.demo_models import User
from dalkit.database import Database
from dalkit.errors import QueryInputError
from dalkit.query.builder import QueryBuilder
from dalkit.repository.sql import Repository

__all__ = ["run_repositories_demo"]

NAMES = [
    "Ada", "Alan", "Barbara", "Brian", "Claude", "Donald", "Edsger", "Frances", "Grace", "Guido",
    "Hedy", "Ivan", "John", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Tony", "Yukihiro",
]  # fmt: skip
READINGS = 50_000


class _ReadingBase(DeclarativeBase):
    """The demo's bulk-load table, in metadata of its own."""


class Reading(_ReadingBase):
    __tablename__ = "demo_readings"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    sensor: Mapped[str] = mapped_column(sa.String(20))
    value: Mapped[int]
    taken_at: Mapped[dt.datetime]


class Users(Repository[User]):
    """What an API might expose: no filtering on e-mail addresses, sorting on names and ids."""

    filterable = ("id", "name", "created_at")
    sortable = ("id", "name", "created_at")
    searchable = ("name",)
    max_page_size = 10


class Readings(Repository[Reading]):
    pass


def run_repositories_demo(db: Database, console: Console) -> None:
    """Filters, offset and keyset pages, a 50,000-row bulk load, and injections refused."""
    with db.connection() as connection:
        _ReadingBase.metadata.drop_all(connection)
        _ReadingBase.metadata.create_all(connection)
    with db.session() as session:
        users = Users(session)
        users.add_many(
            User(email=f"{n.lower()}.{i}@repo.example", name=n) for i, n in enumerate(NAMES)
        )
        _filters(users, console)
        _pages(users, console)
    _bulk_load(db, console)
    with db.session() as session:
        _injections(Users(session), console)
    _query_builder(db, console)


def _filters(users: Users, console: Console) -> None:
    found = users.find(name__startswith="G")
    console.print(
        f'users.find(name__startswith="G") -> {[u.name for u in found]}; '
        f'users.count(name__in=["Ada", "Tony"]) -> {users.count(name__in=["Ada", "Tony"])}; '
        f'users.search("AR") -> {[u.name for u in users.search("AR")]}'
    )


def _pages(users: Users, console: Console) -> None:
    page = users.paginate(page=2, per_page=5, sort="name")
    console.print(
        f'users.paginate(page=2, per_page=5, sort="name") -> {[u.name for u in page.items]} '
        f"(page {page.page} of {page.pages}, {page.total} in all, has_next={page.has_next})"
    )
    first = users.paginate_cursor(limit=5, sort="-name")
    second = users.paginate_cursor(limit=5, sort="-name", after=first.next_cursor)
    assert first.next_cursor is not None
    console.print(
        f"keyset: {[u.name for u in first.items]} then, after cursor "
        f"[dim]{first.next_cursor[:24]}...[/], {[u.name for u in second.items]}"
    )


def _bulk_load(db: Database, console: Console) -> None:
    start = dt.datetime(2024, 1, 1)
    rows = (
        {
            "id": i,
            "sensor": f"s{i % 8}",
            "value": i % 97,
            "taken_at": start + dt.timedelta(seconds=i),
        }
        for i in range(READINGS)
    )
    with db.session() as session:
        loaded = Readings(session).bulk_insert(rows, chunk_size=5_000, progress=True)
    how = "binary COPY" if db.engine.dialect.name == "postgresql" else "executemany"
    console.print(f"bulk_insert loaded {loaded:,} rows with {how}, in one savepoint")


def _injections(users: Users, console: Console) -> None:
    table = Table(title="injection attempts", title_justify="left")
    table.add_column("attempt")
    table.add_column("outcome")
    attempts: list[tuple[str, Any]] = [
        ("filter key", lambda: users.find(**{"name; DROP TABLE demo_users --": "x"})),
        ("filter value", lambda: users.find(name="' OR 1=1 --")),
        ("sort order", lambda: users.list(sort="(CASE WHEN 1=1 THEN name ELSE id END)")),
        ("hidden column", lambda: users.find(email__contains="@")),
        ("cursor", lambda: users.paginate_cursor(after="eyJhZG1pbiI6dHJ1ZX0.forged")),
    ]
    for label, attempt in attempts:
        try:
            result = attempt()
        except QueryInputError as exc:
            outcome = Text(f"{type(exc).__name__}: {exc}", style="yellow")
            if exc.allowed:
                outcome.append(f"\nallowed: {', '.join(exc.allowed)}", style="dim")
        else:
            outcome = Text(f"treated as data: {len(result)} rows", style="green")
        table.add_row(label, outcome)
    console.print(table)


def _query_builder(db: Database, console: Console) -> None:
    query = (
        QueryBuilder(User, dialect=db.engine.dialect.name)
        .left_join("posts")
        .select("name", "count(posts.id)")
        .group_by("name")
        .having("count(posts.id)", ">=", 1)
        .order_by("name")
    )
    with db.connection() as connection:
        rows = connection.execute(query.build()).all()
    console.print(cell(query.to_sql()))
    console.print(f"-> {[tuple(r) for r in rows]}")
