"""A schema built to have each index problem, a clean one, and the workload that reveals them."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Database, Repository

BIG_ROWS = 200_000


class Problems(DeclarativeBase):
    pass


class Customer(Problems):
    __tablename__ = "adv_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100))


class Order(Problems):
    __tablename__ = "adv_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    # a foreign key with no index
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("adv_customers.id"))


class Event(Problems):
    __tablename__ = "adv_events"
    __table_args__ = (
        sa.Index("ix_events_kind_a", "kind"),
        sa.Index("ix_events_kind_b", "kind"),  # a duplicate
        sa.Index("ix_events_created", "created"),  # never used
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    created: Mapped[int]


class Big(Problems):
    __tablename__ = "adv_big"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[int]  # filtered on, no index
    label: Mapped[str] = mapped_column(sa.String(40))


class BigRows(Repository[Big]):
    filterable = ("code", "label")


class Clean(DeclarativeBase):
    pass


class Shop(Clean):
    __tablename__ = "clean_shops"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)


class Item(Clean):
    __tablename__ = "clean_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("clean_shops.id"), index=True)


def build_problems(db: Database, big_rows: int = BIG_ROWS) -> None:
    db.create_all(Problems.metadata)
    with db.connection() as conn:
        conn.execute(sa.text("INSERT INTO adv_customers (id, email) VALUES (1, 'a@example.com')"))
        conn.execute(sa.text("INSERT INTO adv_orders (id, customer_id) VALUES (1, 1)"))
        conn.execute(
            sa.text(
                "INSERT INTO adv_events (id, kind, created) "
                "SELECT n, 'k' || (n % 50), n FROM generate_series(1, 2000) AS n"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO adv_big (id, code, label) "
                "SELECT n, n % 100000, 'row ' || n FROM generate_series(1, :rows) AS n"
            ),
            {"rows": big_rows},
        )
        conn.execute(sa.text("ANALYZE"))


def run_problem_workload(db: Database) -> None:
    """Filters on the unindexed adv_big.code, lookups on adv_events.kind: then the server's
    statistics are flushed by closing the connections."""
    # the repeated statements are the point here: not an N+1 to report
    with db.detect_nplusone("off"), db.session() as session:
        for code in range(25):
            session.execute(sa.select(Big).where(Big.code == code)).all()
        for n in range(60):
            session.execute(sa.select(Event.id).where(Event.kind == f"k{n % 50}")).all()
    db.dispose()
    wait_for_stats(db, "adv_big", 25)


def wait_for_stats(db: Database, table: str, seq_scans: int) -> None:
    # a backend reports its counters when it goes idle or exits, a moment later (a loaded
    # machine's moments are long)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with db.connection() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            seen = conn.execute(
                sa.text("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = :t"),
                {"t": table},
            ).scalar()
        if seen is not None and seen >= seq_scans:
            return
        time.sleep(0.2)
    raise AssertionError(f"PostgreSQL reported {seen} sequential scans of {table}, not {seq_scans}")
