"""The API reference pages place public names only: every ``::: dalkit.Name`` entry of
docs/reference names something in ``dalkit.__all__`` (docs/_hooks/reference.py appends the public
names no page places yet; tests/docs/test_site.py checks the built site has them all)."""

from __future__ import annotations

import re
from pathlib import Path

import dalkit

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"
_ENTRY = re.compile(r"^::: dalkit\.(\w+)\s*$", re.MULTILINE)
#: stable modules rendered for their docstring (the errors page draws the tree of dalkit.errors)
MODULES = frozenset({"errors"})


def reference_entries() -> list[str]:
    return [
        name for page in sorted(REFERENCE.glob("*.md")) for name in _ENTRY.findall(page.read_text())
    ]


def test_every_reference_entry_is_a_public_name() -> None:
    assert sorted(set(reference_entries()) - set(dalkit.__all__) - MODULES) == []


def test_no_public_name_is_placed_twice() -> None:
    entries = reference_entries()
    assert sorted(name for name in set(entries) if entries.count(name) > 1) == []
