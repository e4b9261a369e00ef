"""The tour's unit-of-work section: an account changed in units of work, its audit trail, a
failed unit that leaves nothing, and its events delivered through the outbox relay.

It brings its own audited model (``demo_accounts``) so that the other sections' tables stay
unaudited.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import audit
from dalkit.cli._render import cell
from dalkit.database import Database
from dalkit.outbox.events import DomainEvent, EventBus, HasEvents
from dalkit.outbox.messages import event_type
from dalkit.outbox.publishers import EventBusPublisher
from dalkit.outbox.relay import OutboxRelay
from dalkit.tables import audit_log, outbox
from dalkit.uow.unit import UnitOfWork


class _DemoUowBase(DeclarativeBase):
    pass


class DemoAccount(audit.Audited, HasEvents, _DemoUowBase):
    __tablename__ = "demo_accounts"
    audit_exclude = frozenset({"pin"})

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(100))
    balance: Mapped[int] = mapped_column(default=0)
    pin: Mapped[str] = mapped_column(sa.String(10), default="0000")


@event_type("demo.account_credited", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountCredited(DomainEvent):
    account_id: int
    amount: int


def _reset(db: Database) -> None:
    _DemoUowBase.metadata.drop_all(db.engine)
    db.create_all(_DemoUowBase.metadata)
    with db.session() as session:
        session.execute(audit_log.delete().where(audit_log.c.entity_type == "DemoAccount"))
        session.execute(outbox.delete().where(outbox.c.event_type.like("demo.%")))


def run_uow_demo(db: Database, console: Console) -> None:
    """Credit an account in units of work, show its audit trail, then relay its events."""
    _reset(db)
    with UnitOfWork(db, actor="teller-7", request_id="req-1", outbox=True) as uow:
        account = DemoAccount(owner="Barbara Liskov", balance=100, pin="4321")
        uow.session.add(account)
    for amount in (25, 40):
        with UnitOfWork(db, actor="teller-7", outbox=True) as uow:
            loaded = uow.session.get(DemoAccount, account.id)
            assert loaded is not None
            loaded.balance += amount
            loaded.pin = "9999"  # excluded from the audit: never shows
            loaded.record_event(AccountCredited(account_id=loaded.id, amount=amount))
    try:
        with UnitOfWork(db, actor="intruder", outbox=True) as uow:
            loaded = uow.session.get(DemoAccount, account.id)
            assert loaded is not None
            loaded.balance = 1_000_000
            loaded.record_event(AccountCredited(account_id=loaded.id, amount=999_900))
            raise PermissionError("not allowed")
    except PermissionError:
        console.print(
            "A unit of work that raised left no change, no audit row and no outbox row behind."
        )

    with db.session() as session:
        trail = audit.history(session, DemoAccount, account.id)
    table = Table(title=f"audit trail of DemoAccount {account.id}", title_justify="left")
    for name in ("action", "actor", "request", "changes"):
        table.add_column(name)
    for entry in trail:
        table.add_row(
            entry.action, cell(entry.actor_id), cell(entry.request_id), cell(entry.changes)
        )
    console.print(table)

    with db.session() as session:
        others = session.execute(
            sa.select(sa.func.count())
            .select_from(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.event_type.not_like("demo.%"))
        ).scalar()
    if others:
        # on a --url database, a relay round would deliver (and mark sent) the app's messages
        console.print(f"The outbox holds {others} message(s) of your own: not relaying them.")
        return
    bus = EventBus()
    delivered: list[AccountCredited] = []
    bus.subscribe(AccountCredited, delivered.append)
    relay = OutboxRelay(db, EventBusPublisher(bus))
    before = relay.status()
    result = relay.run_once()
    console.print(
        f"Outbox: {before.pending} pending message(s); the relay published {result.published}: "
        + ", ".join(f"+{event.amount}" for event in delivered)
        + " (the rolled-back credit was never stored)."
    )
