"""The tour's migrations section: autogenerate, the linter stopping an unsafe revision, the
safe version applied with a progress bar; it can run twice on the same database."""

from __future__ import annotations

from rich.console import Console

from dalkit import Database
from dalkit.cli.demo_migrations import run_migrations_demo


def test_the_migrations_section_shows_the_linter_stopping_an_unsafe_revision(
    sqlite_url: str,
) -> None:
    db = Database(sqlite_url)
    try:
        for _ in range(2):
            console = Console(record=True, width=200)
            run_migrations_demo(db, console)
            text = console.export_text()
            assert "op.create_table('demo_products'" in text
            assert "adding-not-nullable-field" in text
            assert "require-concurrent-index-creation" in text
            assert "op.create_index_concurrently('ix_demo_products_sku'" in text
            assert "applied 2 revisions" in text
            assert "the database matches the models" in text
    finally:
        db.dispose()
