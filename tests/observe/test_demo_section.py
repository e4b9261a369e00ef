"""The observability section of ``dalkit demo``: an N+1 caught and fixed, the plan before and
after the advised index, and the advice table."""

from __future__ import annotations

from rich.console import Console

from dalkit import Database
from dalkit.cli.demo_models import reset_schema
from dalkit.cli.demo_observe import run_observe_demo


def test_the_section_shows_the_n_plus_one_the_advice_and_both_plans(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    console = Console(record=True, width=200)
    try:
        reset_schema(db)
        run_observe_demo(db, console)
    finally:
        db.dispose()
    text = console.export_text()
    assert "N+1 query: Post.author lazily loaded for 2 Post instances" in text
    assert "6 posts, no N+1" in text
    assert "unused eager load: Post.author was loaded for 6 Post instances" in text
    assert "CREATE INDEX ix_demo_events_code ON demo_events (code)" in text
    assert "SCAN demo_events" in text
    assert "SEARCH demo_events USING COVERING INDEX ix_demo_events_code" in text
