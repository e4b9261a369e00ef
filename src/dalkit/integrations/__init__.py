"""Web integrations: :mod:`dalkit.integrations.asgi` (per-request transactions for any ASGI app)
and :mod:`dalkit.integrations.fastapi` (dependencies and error handlers). Nothing is imported
here, so ``import dalkit`` and ``import dalkit.integrations`` never import Starlette or FastAPI.
"""

from __future__ import annotations
