"""The layout's rules, checked from the source: no import cycle (at runtime or under
TYPE_CHECKING), dependencies pointing one way, and modules small enough to read in one sitting."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "dalkit"
MAX_LINES = 400
# the engine and the transaction layer know nothing of what is built on them; the database
# installs the features that hook into the engine (observe, cache) and nothing above those
_FEATURES = ("dalkit.repository", "dalkit.uow", "dalkit.audit", "dalkit.outbox")
LAYERS = {
    "dalkit.engine": (*_FEATURES, "dalkit.cache", "dalkit.observe", "dalkit.migrations"),
    "dalkit.transaction": (*_FEATURES, "dalkit.cache", "dalkit.observe", "dalkit.migrations"),
    "dalkit.database": _FEATURES,
    "dalkit.database_async": _FEATURES,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every dalkit module ``name`` imports, TYPE_CHECKING blocks and function bodies included."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` names a module; otherwise the base is imported
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in MODULES and target != name:
                yield target


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def _is_package_reexport(cycle: list[str]) -> bool:
    # a package's __init__ re-exporting its own modules is not a dependency between concerns
    return all(
        m == "dalkit" or m.startswith("dalkit.cli") or m.startswith("dalkit.testing") for m in cycle
    )


def test_no_module_imports_itself_back_through_others() -> None:
    cycles = [cycle for cycle in _cycles() if not _is_package_reexport(cycle)]
    assert cycles == []


@pytest.mark.parametrize("lower", sorted(LAYERS))
def test_the_engine_transactions_and_database_import_nothing_built_on_them(lower: str) -> None:
    offending = {
        (module, target)
        for module, targets in GRAPH.items()
        if module == lower or module.startswith(lower + ".")
        for target in targets
        if target.startswith(LAYERS[lower])
    }
    assert offending == set()


def test_every_module_is_short_enough_to_read_in_one_sitting() -> None:
    long = {
        name: count
        for name, path in MODULES.items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_module_opens_with_what_it_owns() -> None:
    missing = [
        name
        for name, path in MODULES.items()
        if path.read_text().strip() and ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert missing == []
