"""Web integrations: ``dalkit.integrations.asgi`` (a transaction per request for any ASGI app)
and ``dalkit.integrations.fastapi`` (dependencies, error handlers). Nothing is imported here,
so ``import dalkit`` and ``import dalkit.integrations`` never import Starlette or FastAPI."""

from __future__ import annotations
