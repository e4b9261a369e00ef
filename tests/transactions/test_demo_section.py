"""The transactions section of ``dalkit demo`` runs on either backend and shows the total kept."""

from __future__ import annotations

import io
import re

from rich.console import Console

from dalkit import Database
from dalkit.cli.demo_transactions import run_transactions_demo


def test_the_demo_section_moves_money_keeps_the_total_and_its_statistics_add_up(
    db: Database,
) -> None:
    # one run of the demo for both checks: each run is 200 contended transfers (4-6 s on
    # PostgreSQL), and the two checks read the same output
    console = Console(record=True, width=120, file=io.StringIO())
    run_transactions_demo(db, console)
    text = console.export_text()
    assert "200 transfers at SERIALIZABLE" in text
    assert "The total of 500 was kept" in text
    assert "a transfer failed" not in text
    assert "Savepoint rolled back" in text
    assert "db.transaction_stats()" in text
    # total = committed + failed + discarded: without its 'discarded' row the table's total
    # could exceed what it showed
    counts = {
        key: int(re.search(rf"^ {key} +(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        for key in ("total", "committed", "failed", "discarded")
    }
    assert counts["total"] == counts["committed"] + counts["failed"] + counts["discarded"]
