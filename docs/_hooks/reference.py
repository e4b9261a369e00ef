"""mkdocs hook: every name in ``dalkit.__all__`` gets an API reference entry.

The reference pages place the public names by topic (``::: dalkit.Name``); a name added to
``__all__`` since then is appended here at build time, to the errors page when it is an error or
warning class and to the "More public names" page otherwise, so the reference never lags behind
the public surface.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_ENTRY = re.compile(r"^::: dalkit\.(\w+)\s*$", re.MULTILINE)
ERRORS_PAGE = "reference/errors.md"
MORE_PAGE = "reference/more.md"


def public_names() -> list[str]:
    import dalkit  # imported at build time: the reference documents what the package exports

    return sorted(dalkit.__all__)


def placed_names(docs_dir: Path) -> set[str]:
    """The names the reference pages already place, by topic."""
    pages = sorted((docs_dir / "reference").glob("*.md"))
    return {name for page in pages for name in _ENTRY.findall(page.read_text(encoding="utf-8"))}


def unplaced(docs_dir: Path) -> tuple[list[str], list[str]]:
    """(errors and warnings, other names) of ``dalkit.__all__`` that no page places yet."""
    placed = placed_names(docs_dir)
    missing = [name for name in public_names() if name not in placed]
    errors = [name for name in missing if name.endswith(("Error", "Warning"))]
    return errors, [name for name in missing if name not in errors]


def entries(names: list[str], heading_level: int) -> str:
    return "".join(
        f"\n::: dalkit.{name}\n    options:\n      heading_level: {heading_level}\n"
        for name in names
    )


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    uri = page.file.src_uri
    if uri not in (ERRORS_PAGE, MORE_PAGE):
        return markdown
    errors, others = unplaced(Path(config["docs_dir"]))
    if uri == ERRORS_PAGE:
        return markdown + entries(errors, 3)
    if not others:
        return markdown + "\nEvery other public name is on one of the pages above.\n"
    return markdown + entries(others, 2)
