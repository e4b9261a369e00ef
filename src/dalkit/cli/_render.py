"""Rich building blocks shared by the commands: plain-text cells, health rows, key/value tables,
the progress bar of a migration run, the metavar of a flag."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from dalkit.engine.health import HealthCheckResult

if TYPE_CHECKING:
    from dalkit.migrations import RevisionInfo

#: a flag takes no value: without it (Typer's only knob, per option), its help shows ``<bool>``
FLAG_METAVAR = ""


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


def revision_progress(
    console: Console, run: Callable[[Callable[[RevisionInfo, int, int], None]], Any]
) -> Any:
    """``run(on_step)`` under a progress bar that ``on_step`` moves. When no revision ran
    (refused by the linter, or nothing to do), the bar is taken off the screen: a
    ``migrating 0/?`` above the answer would say that a run had started.

    Args:
        console: Where the bar is drawn.
        run: Runs the migration, calling ``on_step(revision, done, total)`` after each revision.

    Returns:
        What ``run`` returns.
    """
    bar = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(
        TextColumn("{task.description}", markup=False), *bar, console=console
    ) as progress:
        task = progress.add_task("migrating", total=None)

        def on_step(info: RevisionInfo, done: int, total: int) -> None:
            progress.update(
                task, total=total, completed=done, description=f"{info.revision} {info.message}"
            )

        try:
            return run(on_step)
        finally:
            if not progress.tasks[0].completed:
                progress.live.transient = True
