"""Fixtures for the migrations tests; the project itself is in project.py."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes seconds (it still runs)")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """An empty migration directory (init not run yet)."""
    return tmp_path / "migrations"
