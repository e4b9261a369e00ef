"""The example app, imported from examples/conduit (not an installed package, so neither
pytest nor mypy finds it on their own: it is loaded by name and typed here)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI

from dalkit import AsyncDatabase

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "conduit"))


class CreateApp(Protocol):
    def __call__(self, db: AsyncDatabase | None = None, settings: Any = None) -> FastAPI: ...


class CreateDatabase(Protocol):
    def __call__(self, settings: Any, **options: Any) -> tuple[AsyncDatabase, Any]: ...


class CloseDatabase(Protocol):
    async def __call__(self, database: AsyncDatabase, redis: Any) -> None: ...


_app = importlib.import_module("conduit.app")
create_app: CreateApp = _app.create_app
create_database: CreateDatabase = _app.create_database
close_database: CloseDatabase = _app.close_database
_models = importlib.import_module("conduit.models")
Base: Any = _models.Base
Article: Any = _models.Article
Comment: Any = _models.Comment
Settings: Any = importlib.import_module("conduit.settings").Settings
