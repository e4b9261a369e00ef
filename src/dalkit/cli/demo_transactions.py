"""The transactions section of the tour: concurrent transfers with retries, a savepoint that
refuses an overdraft, on-commit callbacks, and the statistics they leave behind.

Works on its own table, ``demo_accounts``, dropped and recreated each run.
"""

from __future__ import annotations

import random
import threading
from time import perf_counter

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from dalkit.cli._render import cell, key_value_table
from dalkit.database import Database
from dalkit.transaction.retry import RetryPolicy
from dalkit.transaction.scope import on_commit

__all__ = ["run_transactions_demo"]

ACCOUNTS = 5
OPENING_BALANCE = 100
THREADS = 4
TRANSFERS_PER_THREAD = 50
RETRY = RetryPolicy(attempts=50, base_delay=0.005, max_delay=0.1)

_metadata = sa.MetaData()
_accounts = sa.Table(
    "demo_accounts",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("balance", sa.Integer, nullable=False),
)


class _OverdraftError(Exception):
    """Raised inside the demo's savepoint to refuse a transfer the balance cannot cover."""


def _balances(session: Session) -> list[int]:
    return list(session.scalars(sa.select(_accounts.c.balance).order_by(_accounts.c.id)))


def _transfer(session: Session, source: int, target: int, amount: int) -> bool:
    balances = dict(
        session.execute(
            sa.select(_accounts.c.id, _accounts.c.balance).where(
                _accounts.c.id.in_([source, target])
            )
        ).all()
    )
    if balances[source] < amount:
        return False
    for account, balance in (
        (source, balances[source] - amount),
        (target, balances[target] + amount),
    ):
        session.execute(_accounts.update().where(_accounts.c.id == account).values(balance=balance))
    return True


def run_transactions_demo(db: Database, console: Console) -> None:
    """Move money between accounts from several threads at SERIALIZABLE, retrying conflicts,
    and show that the total never changes; then a savepoint and the statistics."""
    with db.engine.begin() as connection:
        _metadata.drop_all(connection)
        _metadata.create_all(connection)
        connection.execute(
            _accounts.insert(), [{"id": i, "balance": OPENING_BALANCE} for i in range(ACCOUNTS)]
        )
    db.transaction_stats(reset=True)
    total = ACCOUNTS * OPENING_BALANCE
    committed_callbacks: list[int] = []
    moved: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    @db.transactional(isolation="SERIALIZABLE", retry=RETRY)
    def transfer(session: Session, source: int, target: int, amount: int) -> bool:
        done = _transfer(session, source, target, amount)
        on_commit(lambda: committed_callbacks.append(amount))
        return done

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(TRANSFERS_PER_THREAD):
                source, target = rng.sample(range(ACCOUNTS), 2)
                result = transfer(source, target, rng.randint(1, 40))
                with lock:
                    moved.append(result)
        except Exception as exc:  # shown below rather than lost in a thread
            errors.append(exc)

    started = perf_counter()
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = perf_counter() - started
    balances = db.transactional(read_only=True).run(_balances)
    stats = db.transaction_stats()

    console.print(
        f"{THREADS} threads made {len(moved)} transfers at SERIALIZABLE in {seconds:.2f} s "
        f"({sum(moved)} moved money, the rest lacked funds); [bold]{stats['retries']}[/] "
        f"conflicts were retried, and {len(committed_callbacks)} on_commit callbacks ran."
    )
    for error in errors:
        console.print(Text(f"a transfer failed: {type(error).__name__}: {error}", style="red"))
    table = Table(title="balances", title_justify="left")
    for account in range(ACCOUNTS):
        table.add_column(f"#{account}", justify="right")
    table.add_column("total", justify="right", style="bold")
    table.add_row(*(cell(b) for b in balances), cell(sum(balances)))
    console.print(table)
    kept = "[green]kept[/]" if sum(balances) == total else "[red]BROKEN[/]"
    console.print(f"The total of {total} was {kept}; lowest balance {min(balances)}.")

    _show_savepoint(db, console)
    durations = stats["duration_ms"]
    console.print(
        key_value_table(
            "db.transaction_stats()",
            {
                **{
                    key: stats[key]
                    for key in ("total", "committed", "failed", "discarded", "rolled_back")
                },
                "retries": stats["retries"],
                "success_rate": round(stats["success_rate"], 3),
                "duration p50/p95/p99": (
                    f"{durations['p50']:.1f} / {durations['p95']:.1f} / {durations['p99']:.1f} ms"
                ),
            },
        )
    )


def _show_savepoint(db: Database, console: Console) -> None:
    """An overdraft refused inside a nested savepoint: the outer transaction goes on."""

    @db.transactional(propagation="nested")
    def withdraw(session: Session, account: int, amount: int) -> None:
        session.execute(
            _accounts.update()
            .where(_accounts.c.id == account)
            .values(balance=_accounts.c.balance - amount)
        )
        balance = session.scalar(sa.select(_accounts.c.balance).where(_accounts.c.id == account))
        if balance is not None and balance < 0:
            raise _OverdraftError(f"account #{account} would go to {balance}")

    with db.transaction() as session:
        before = _balances(session)
        # the transfers leave any account possibly empty; the richest one can always pay 1
        payer = max(range(len(before)), key=before.__getitem__)
        victim = (payer + 1) % len(before)
        try:
            withdraw(victim, before[victim] + 1_000)
        except _OverdraftError as exc:
            console.print(f"Savepoint rolled back: {exc}; the outer transaction carried on.")
        withdraw(payer, 1)
        after = _balances(session)
    console.print(
        f"Account #{victim} kept {after[victim]} (was {before[victim]}); account #{payer} paid 1 "
        f"({before[payer]} -> {after[payer]}) in the same transaction."
    )
