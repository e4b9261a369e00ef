"""Writes a statement's kind does not show: a SELECT whose CTE updates (PostgreSQL) invalidates
what it writes; what a statement declares it writes (``dalkit_writes``) is what it invalidates,
so dalkit's own statements that write nothing (the outbox's ``DO`` block that begins a
transaction before its advisory locks) leave every entry cached, and a user's ``DO`` block or
function names its tables; the DDL of a temporary table invalidates nothing (sync; SQLite and
PostgreSQL; memory and Redis)."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from dalkit import Database, DomainEvent, OutboxMessage, OutboxRelay, UnitOfWork
from dalkit.cache import WRITES_OPTION, QueryCache
from dalkit.outbox.messages import event_type

from .models import book_table, tag_table
from .test_write_paths import titles, warm


@event_type("test.cache_account_credited", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountCredited(DomainEvent):
    account_id: int
    amount: int


class Sent:
    def __init__(self) -> None:
        self.messages: list[OutboxMessage] = []

    def publish(self, message: OutboxMessage) -> None:
        self.messages.append(message)


def test_events_through_the_outbox_and_its_relay_leave_other_tables_cached(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    with UnitOfWork(db, outbox=True) as uow:  # the aggregate's advisory lock: BEGIN_NOW first
        uow.publish(AccountCredited(account_id=1, amount=5), aggregate=("Account", 1))
    sent = Sent()
    assert OutboxRelay(db, sent).run_once().published == 1
    assert len(sent.messages) == 1
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1


def test_a_statement_declaring_its_writes_invalidates_those_tables_only(
    db: Database, cache: QueryCache
) -> None:
    warm(db, cache)
    nothing = sa.text("SELECT 1").execution_options(**{WRITES_OPTION: ()})
    with db.transaction() as session:
        session.execute(nothing)
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1
    # a write its SQL hides from the parser (as a DO block or a function would): declared
    rename = sa.text("UPDATE cache_book SET title = 'k' WHERE id = 2")
    with db.transaction() as session:
        session.execute(rename.execution_options(**{WRITES_OPTION: ["CACHE_BOOK"]}))
    assert titles(db, cache) == ["a", "k"]


@pytest.mark.parametrize("outer", ["select", "insert from select"])
def test_a_cte_that_writes_invalidates_its_table(
    db: Database, cache: QueryCache, outer: str
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no INSERT/UPDATE/DELETE in a WITH clause")
    warm(db, cache)
    renamed = (
        sa.update(book_table)
        .where(book_table.c.id == 2)
        .values(title="k")
        .returning(book_table.c.id, book_table.c.title)
        .cte("renamed")
    )
    with db.transaction() as session:
        if outer == "select":
            assert session.execute(sa.select(renamed.c.id)).scalar_one() == 2
        else:  # the INSERT writes cache_tag, its CTE cache_book
            copy = sa.select(renamed.c.id, renamed.c.title)
            session.execute(sa.insert(tag_table).from_select(["id", "label"], copy))
    assert titles(db, cache) == ["a", "k"]


def test_a_temporary_tables_ddl_leaves_every_entry_cached(db: Database, cache: QueryCache) -> None:
    warm(db, cache)
    scratch = sa.Table(
        "cache_scratch", sa.MetaData(), sa.Column("id", sa.Integer), prefixes=["TEMPORARY"]
    )
    with db.transaction() as session:  # as the audit's before-image of a large UPDATE does
        scratch.create(session.connection())
        session.execute(scratch.insert().values(id=1))
        scratch.drop(session.connection())
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1
    with db.transaction() as session:  # a table that stays: everything
        sa.Table("cache_kept", sa.MetaData(), sa.Column("id", sa.Integer)).create(
            session.connection()
        )
    misses = cache.get_stats()["misses"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["misses"] == misses + 1
