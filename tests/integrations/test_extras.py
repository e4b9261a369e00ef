"""What `pip install 'dalkit[web]'` brings: everything the web integration imports; and what a
module whose extra is missing says."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest


def test_the_web_extra_brings_sqlalchemy_s_asyncio_support() -> None:
    # the middleware and the FastAPI helpers import sqlalchemy.ext.asyncio (they serve an
    # AsyncDatabase too), which needs greenlet: with only starlette and fastapi, importing
    # them with a sync Database failed with "AsyncDatabase needs greenlet"
    requires = importlib.metadata.requires("dalkit") or []
    web = {
        re.split(r"[\s<>=;\[]", line, maxsplit=1)[0]
        for line in requires
        if re.search(r"""extra\s*==\s*["']web["']""", line)
    }
    assert {"starlette", "fastapi", "sqlalchemy", "greenlet"} <= web


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("dalkit.integrations.asgi", "anyio", "web"),
        ("dalkit.integrations.fastapi", "fastapi", "web"),
        ("dalkit.integrations.http_errors", "starlette", "web"),
        ("dalkit.observe.prometheus", "prometheus_client", "prometheus"),
    ],
)
def test_a_module_whose_extra_is_missing_says_which_extra_to_install(
    module: str, missing: str, extra: str
) -> None:
    # a core install raised Python's ModuleNotFoundError ("No module named 'anyio'"), naming
    # a package the user never asked for; the process hides the package as a core install has
    # none (a None entry in sys.modules makes importing it raise ModuleNotFoundError)
    script = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "import dalkit\n"
        "try:\n"
        f"    __import__({module!r})\n"
        "except dalkit.ConfigurationError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{module.replace('http_errors', 'fastapi')} needs {missing}, which is not installed;"
        f" install it with pip install 'dalkit[{extra}]'"
    )
