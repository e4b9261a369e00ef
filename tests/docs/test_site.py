"""The documentation site builds with ``mkdocs build --strict``: a broken link, a missing page or
an API reference that no longer resolves fails ``make test``, not only ``make docs``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dalkit

ROOT = Path(__file__).resolve().parents[2]


# no_cover: `mkdocs build` runs none of dalkit's code beyond importing it (its reference hook
# lists the exports; the API pages are read from the sources), which every test does, so
# measuring it found nothing, at the cost of tracing the whole build
@pytest.mark.slow
@pytest.mark.no_cover
def test_the_site_builds_strictly_with_every_page_in_place(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    pages = ["index.html", "transactions/index.html", "reference/database/index.html"]
    assert [page for page in pages if not (site / page).is_file()] == []
    reference = "".join(page.read_text() for page in (site / "reference").rglob("index.html"))
    assert "::: dalkit" not in reference, "mkdocstrings left a directive unrendered"
    # every public name has its entry (the hook appends those no topic page places)
    assert [name for name in dalkit.__all__ if f'id="dalkit.{name}"' not in reference] == []
    # diagrams render offline: the pages load the committed mermaid, never one from a CDN (the
    # theme fetches mermaid from unpkg only when no global `mermaid` exists when a diagram mounts)
    architecture = (site / "architecture" / "index.html").read_text()
    assert 'class="mermaid"' in architecture
    assert '<script src="../javascripts/mermaid.min.js">' in architecture
    assert (site / "javascripts" / "mermaid.min.js").read_text().startswith("/*! mermaid 11.")
    cdns = ("unpkg.com", "cdn.jsdelivr.net", "cdnjs.cloudflare.com", "fonts.googleapis.com")
    html = {str(page.relative_to(site)): page.read_text() for page in site.rglob("*.html")}
    assert [(page, cdn) for page, text in html.items() for cdn in cdns if cdn in text] == []
