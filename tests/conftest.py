"""Test-suite wiring: pytester lets the harness tests run the dalkit plugin in inner sessions;
``project_module`` writes a module of the user's project, as the CLI's ``module:attr`` find it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)


@pytest.fixture
def project_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """``project_module(source)`` writes a module in the current directory (``tmp_path``, which
    is not on ``sys.path``, as for a console script) and returns its name; imported ones are
    forgotten after the test."""
    monkeypatch.chdir(tmp_path)
    names: list[str] = []

    def write(source: str) -> str:
        name = f"project_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)
