"""The application: FastAPI with DatabaseMiddleware (one transaction per request, committed
before the response starts), the spec's error bodies, and the routers. It migrates its
database to the newest revision (``examples/conduit/migrations``, dalkit's linted Alembic
revisions) on start-up.

Run it with ``make serve`` (SQLite in ./conduit.db) or with ``DALKIT_DATABASE_URL`` set;
``DALKIT_REDIS_URL`` moves the query cache from memory to Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from conduit import errors
from conduit.caching import open_cache
from conduit.models import Base
from conduit.routes import articles, comments, profiles, tags, users
from conduit.settings import Settings
from dalkit import AsyncDatabase, AsyncRedisManager
from dalkit.integrations.asgi import DatabaseMiddleware
from dalkit.migrations import Migrations

#: the schema's history: new revisions with ``dalkit migrate new`` (or Migrations.revision)
MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def create_database(
    settings: Settings, **options: Any
) -> tuple[AsyncDatabase, AsyncRedisManager | None]:
    """The database ``settings`` name, with Conduit's query cache (in Redis when
    ``settings.redis_url`` is set), and the Redis manager to close with it; ``options`` are
    more of AsyncDatabase's (``nplusone="raise"`` in the tests)."""
    cache, redis = open_cache(settings)
    database = AsyncDatabase(
        settings.database_url, secret_key=settings.secret_key, cache=cache, **options
    )
    return database, redis


async def close_database(database: AsyncDatabase, redis: AsyncRedisManager | None) -> None:
    """Dispose of ``database`` and close the Redis of its cache: the cache backend's own
    connections, then the manager's (``create_database``'s second value)."""
    await database.dispose()
    if redis is not None:
        await database.cache.backend.close()
        await redis.close()


def create_app(db: AsyncDatabase | None = None, settings: Settings | None = None) -> FastAPI:
    """The Conduit API on ``db`` (default: from ``settings``, created with its query cache,
    migrated on start-up and disposed of on shutdown). A ``db`` given without a cache runs
    uncached."""
    settings = settings or Settings.from_env()
    redis: AsyncRedisManager | None = None
    owned = db is None
    if db is None:
        database, redis = create_database(settings)
    else:
        database = db

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # a start-up that fails (its migration) closes what it opened too
            await Migrations(database, MIGRATIONS, Base.metadata).upgrade()
            yield
        finally:
            if owned:
                await close_database(database, redis)

    app = FastAPI(title="Conduit", lifespan=lifespan)
    app.state.settings = settings
    app.state.db = database
    app.add_middleware(DatabaseMiddleware, db=database)
    errors.install(app)
    for module in (users, profiles, articles, comments, tags):
        app.include_router(module.router)
    return app


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn conduit.app:app`` builds the application on first use, not on every import
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
