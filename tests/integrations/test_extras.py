"""What `pip install 'dalkit[web]'` brings: everything the web integration imports."""

from __future__ import annotations

import importlib.metadata
import re


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
