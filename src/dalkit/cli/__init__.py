"""dalkit's command line (``dalkit doctor``, ``dalkit demo``): Typer and Rich, the ``cli`` extra.

``main()`` is the console script; ``app`` is the Typer application, imported on first use.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dalkit.cli._app import app

__all__ = ["app", "main"]

_NEEDS = ("typer", "rich")


def main() -> None:
    """Run the ``dalkit`` command; without the cli extra, say how to install it and exit 2."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"dalkit's command line needs {' and '.join(missing)}: pip install 'dalkit[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from dalkit.cli._app import app

    app(prog_name="dalkit")


def __getattr__(name: str) -> Any:
    # importing dalkit.cli must work without typer, so that main() can name the extra
    if name == "app":
        from dalkit.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
