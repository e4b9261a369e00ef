"""Rich building blocks shared by the commands: plain-text cells, health rows, key/value tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from dalkit.engine.health import HealthCheckResult


def cell(value: Any, style: str = "") -> Text:
    """``value`` as plain text: driver messages, paths and revision names may hold ``[...]``,
    which Rich reads as markup (and an unmatched ``[/x]`` makes it raise MarkupError).

    Args:
        value: What to show; None is shown as a dim ``-``.
        style: A Rich style for the text.

    Returns:
        The text, never parsed as markup.
    """
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style=style)
    if isinstance(value, float):
        return Text(f"{value:g}", style=style)
    return Text(str(value), style=style)


def status(ok: bool) -> Text:
    return Text("ok", style="bold green") if ok else Text("FAILED", style="bold red")


def health_rows(result: HealthCheckResult) -> list[tuple[str, Text]]:
    """What a health check found, as (label, value) rows; the URL is already masked."""
    rows = [
        ("status", status(result.ok)),
        ("url", cell(result.url)),
        ("latency", cell(f"{result.latency_ms:.1f} ms")),
        ("server version", cell(result.server_version)),
        ("database", cell(result.database)),
    ]
    if result.error is not None:
        rows.append(("error", Text(result.error, style="red")))
    return rows


def key_value_table(title: str, values: Mapping[str, Any]) -> Table:
    table = Table(title=title or None, title_justify="left", show_header=False, box=None)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in values.items():
        table.add_row(key, cell(value))
    return table
