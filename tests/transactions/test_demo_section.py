"""The transactions section of ``dalkit demo`` runs on either backend and shows the total kept."""

from __future__ import annotations

import io

from rich.console import Console

from dalkit import Database
from dalkit.cli.demo_transactions import run_transactions_demo


def test_the_demo_section_moves_money_and_keeps_the_total(db: Database) -> None:
    console = Console(record=True, width=120, file=io.StringIO())
    run_transactions_demo(db, console)
    text = console.export_text()
    assert "200 transfers at SERIALIZABLE" in text
    assert "The total of 500 was kept" in text
    assert "a transfer failed" not in text
    assert "Savepoint rolled back" in text
    assert "db.transaction_stats()" in text
