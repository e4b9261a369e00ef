"""The observability section of the tour: an N+1 caught and fixed, an eager load nobody read,
a plan before and after an index, and the index advice table."""

from __future__ import annotations

import time
import warnings
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from dalkit.cli._render import cell
from dalkit.cli.demo_models import Post, User
from dalkit.cli.inspect import advice_table
from dalkit.database import Database
from dalkit.observe import (
    NPlusOneError,
    QueryPlan,
    UnusedEagerLoadWarning,
    explain,
    index_advice,
    install,
    table_stats,
)
from dalkit.repository.sql import Repository

__all__ = ["run_observe_demo"]

#: rows of the demo's own table for the plan and the advice
EVENTS = 20_000
SCANS = 30


class _Posts(Repository[Post]):
    filterable = ("author_id", "title")


def run_observe_demo(db: Database, console: Console) -> None:
    """N+1 detection, EXPLAIN before and after the advised index, and index advice."""
    observer = install(db.engine)
    _nplusone(db, console, observer)
    events = _events_table(db)
    for code in range(SCANS):
        with db.connection() as conn:
            conn.execute(sa.select(events.c.id).where(events.c.code == code)).all()
    if db.config.backend == "postgresql":
        _wait_for_scan_counts(db, events.name)
    with db.connection() as conn:
        # the demo's own tables only: with --url the database may hold an application's
        advice = [a for a in index_advice(conn, observer, [_Posts]) if a.table.startswith("demo_")]
    console.print(advice_table(advice))
    statement = sa.select(events.c.id).where(events.c.code == sa.bindparam("code"))
    with db.connection() as conn:
        before = explain(conn, statement, {"code": 7})
    ddl = next((a.ddl for a in advice if a.kind == "unindexed_filter" and a.ddl), None)
    if ddl is not None:
        with db.connection() as conn:
            # the advised DDL: on PostgreSQL it says CONCURRENTLY, which needs no transaction
            conn.execute(sa.text(ddl.replace(" CONCURRENTLY", "")))
    with db.connection() as conn:
        after = explain(conn, statement, {"code": 7})
    console.print(_plans(before, after, ddl))


def _nplusone(db: Database, console: Console, observer: Any) -> None:
    with db.session() as session:
        authors = [
            User(email=f"observe-{n}@example.com", name=f"Observer {n}") for n in range(1, 4)
        ]
        for author in authors:
            author.posts = [Post(title=f"{author.name}, post {k}") for k in (1, 2)]
        session.add_all(authors)
        session.flush()
        ids = [a.id for a in authors]
    table = Table("attempt", "statements", "outcome", title="N+1 detection", title_justify="left")
    with observer.detect_nplusone("raise"), db.session() as session:
        with observer.query_budget(max_queries=100) as budget:
            try:
                for post in _Posts(session).list(author_id__in=ids):
                    _ = post.author.name
                outcome = "not caught"
            except NPlusOneError as exc:
                outcome = str(exc).split(" (at ")[0]
        table.add_row(cell("post.author in a loop"), cell(budget.queries), cell(outcome))
    with observer.detect_nplusone("raise"), db.session() as session:
        with observer.query_budget(max_queries=100) as budget:
            names = [
                p.author.name for p in _Posts(session).list(author_id__in=ids, load=["author"])
            ]
        table.add_row(
            cell('load=["author"]'), cell(budget.queries), cell(f"{len(names)} posts, no N+1")
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnusedEagerLoadWarning)
        with observer.detect_nplusone("raise"), db.session() as session:
            with observer.query_budget(max_queries=100) as budget:
                _ = [p.title for p in _Posts(session).list(author_id__in=ids, load=["author"])]
    unused = [str(w.message).split(" by the read")[0] for w in caught]
    table.add_row(
        cell('load=["author"], author never read'),
        cell(budget.queries),
        cell(unused[0] if unused else "not caught"),
    )
    console.print(table)


def _wait_for_scan_counts(db: Database, table: str) -> None:
    # a server process reports its scan counters when it goes idle or exits: close the pool's
    # connections, then give the counters a moment to arrive
    db.dispose()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with db.connection() as conn:
            (stats,) = table_stats(conn, table)
        if (stats.seq_scans or 0) >= SCANS:
            return
        time.sleep(0.1)


def _events_table(db: Database) -> sa.Table:
    metadata = sa.MetaData()
    events = sa.Table(
        "demo_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Integer, nullable=False),
    )
    with db.connection() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
        conn.execute(events.insert(), [{"id": n, "code": n % 1000} for n in range(1, EVENTS + 1)])
    return events


def _plans(before: QueryPlan, after: QueryPlan, ddl: str | None) -> Table:
    table = Table("", "plan", "warnings", title="EXPLAIN", title_justify="left")
    table.add_row(cell("before"), cell(before.text), cell("; ".join(map(str, before.warnings))))
    label = f"after {ddl}" if ddl else "after (no index advised)"
    table.add_row(cell(label), cell(after.text), cell("; ".join(map(str, after.warnings))))
    return table
