"""Test-suite wiring: pytester lets the harness tests run the dalkit plugin in inner sessions;
``project_module`` writes a module of the user's project, as the CLI's ``module:attr`` find it;
``frozen_heap`` keeps a test's ``gc.collect()`` to the objects it made; a ``no_cover`` test's
child processes go unmeasured, as the test itself does; under ``PYTHONDONTWRITEBYTECODE`` the
run's processes still share compiled modules, kept in ``.pytest_cache/bytecode``."""

from __future__ import annotations

import gc
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)


def pytest_configure(config: pytest.Config) -> None:
    """Where ``PYTHONDONTWRITEBYTECODE`` is set (this machine's environment sets it), every
    Python process compiled each module it imported, the pytest process and the ~100 children
    the tests start (relays, readers, CLI runs, mkdocs), 1-2 s of CPU each before doing
    anything, and pytest rewrote every test module again. The run writes its bytecode after
    all, under ``PYTHONPYCACHEPREFIX`` (``.pytest_cache/bytecode`` unless one is set), so the
    source tree stays as clean as the variable kept it, and the children inherit both.

    Args:
        config: The session's configuration.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return  # bytecode is cached beside the sources, as usual
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or str(
        config.rootpath / ".pytest_cache" / "bytecode"
    )
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.dont_write_bytecode = False
    sys.pycache_prefix = prefix


# how coverage's `patch = ["subprocess"]` (pyproject.toml) has each Python child measure itself
_CHILD_COVERAGE = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


@pytest.fixture(autouse=True)
def _no_cover_children(request: pytest.FixtureRequest) -> None:
    """pytest-cov's ``no_cover`` pauses the measuring of the test's own process only: its
    children, which inherit the environment, each still started coverage (~0.3 s) and ran
    under its tracer. A test marked ``no_cover`` starts them unmeasured too."""
    if request.node.get_closest_marker("no_cover") is not None:
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name in _CHILD_COVERAGE:
            monkeypatch.delenv(name, raising=False)


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


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The test's collections look only at what it made since it began: the suite's objects so
    far are frozen (``gc.freeze``, undone after the test), else each full collection walks the
    whole session's heap, 2-4 s late in the suite. What the frozen objects hold stays alive,
    as before: a registry made earlier that kept a database would still fail the test."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
