"""How a ``dalkit migrate`` command opens its database: the URL parsed as ``dalkit doctor``
parses it, an async driver run on an AsyncDatabase, and, for a command that needs the database
as it is (one that reads, autogenerates or goes down), a SQLite file that does not exist
refused instead of created."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from dalkit import Database
from dalkit.cli._load import load_attribute
from dalkit.config import DEFAULT_URL, DatabaseConfig
from dalkit.engine.options import existing_database_only
from dalkit.errors import ConfigurationError, ConnectionFailedError
from dalkit.migrations import MigrationError, Migrations, MigrationSettings

if TYPE_CHECKING:
    from dalkit import AsyncDatabase

_ASYNC_DRIVERS = ("asyncpg", "aiosqlite", "psycopg_async")


def _metadata(spec: str | None) -> sa.MetaData | None:
    if spec is None:
        return None
    value = load_attribute(spec, "--metadata")
    value = getattr(value, "metadata", value)
    if not isinstance(value, sa.MetaData):
        raise ConfigurationError(f"{spec} is not a MetaData or declarative Base")
    return value


IfMissing = Literal["create", "refuse", "nothing_to_undo"]


def _existing(config: DatabaseConfig, if_missing: IfMissing) -> DatabaseConfig:
    try:
        return existing_database_only(config)
    except ConnectionFailedError as exc:
        if if_missing == "nothing_to_undo":
            # as going down from base is: the target asks for revisions no database has
            raise MigrationError(f"cannot go down: {exc}", bad_input=True) from None
        # a mistyped path: connecting would create an empty file and report an empty history
        raise ConnectionFailedError(f"{exc}; `dalkit migrate up` creates it") from None


@contextmanager
def open_migrations(
    url: str | None,
    directory: Path,
    metadata: str | None,
    *,
    sync: bool = False,
    if_missing: IfMissing = "create",
) -> Iterator[Migrations[Any]]:
    """The Migrations of ``directory`` on the database of ``url``, disposed of on the way out.

    Args:
        url: The URL as given (None: dalkit's default).
        directory: The migration directory.
        metadata: ``module:attribute`` of the models, or None.
        sync: Run on a sync driver even when the URL names an async one.
        if_missing: What a SQLite file that does not exist is: "create" it (``up`` may),
            "refuse" it (a command that reads or compares the database: an empty one would
            answer with an empty history or schema), or "nothing_to_undo" (``down``: bad
            input, as going down from base). Refused, it is never created.

    Raises:
        ConfigurationError: The URL is malformed, or ``metadata`` names no MetaData.
        ConnectionFailedError: ``if_missing`` is "refuse" and the SQLite file does not exist.
        MigrationError: ``if_missing`` is "nothing_to_undo" and the SQLite file does not
            exist (``bad_input`` is True).
    """
    # parsed as `dalkit doctor` parses it: an '@' in the password read as libpq reads it, and a
    # malformed URL a ConfigurationError (SQLAlchemy's errors show pieces of the password)
    config = DatabaseConfig.coerce(url or DEFAULT_URL)
    models = _metadata(metadata)  # a mistyped option is reported before the database's state
    # the driver as written (get_driver_name() would load the dialect, an unknown one raising)
    is_async = config.url.drivername.partition("+")[2] in _ASYNC_DRIVERS
    if sync and is_async:  # dalkit picks a sync driver
        backend = config.url.drivername.partition("+")[0]
        config, is_async = (
            dataclasses.replace(config, url=config.url.set(drivername=backend)),
            False,
        )
    if if_missing != "create":
        config = _existing(config, if_missing)
    db: Database | AsyncDatabase
    if is_async:
        # imported here: without greenlet (no async extra) every other command still works
        from dalkit import AsyncDatabase

        db = AsyncDatabase(config)
    else:
        db = Database(config)
    try:
        yield Migrations(db, directory, models, settings=MigrationSettings())
    finally:
        if is_async:
            asyncio.run(db.dispose())  # type: ignore[arg-type]
        else:
            db.dispose()


def call(migrations: Migrations[Any], result: Any) -> Any:
    """The value of a Migrations call: awaited when the database is async, in a loop of its own
    whose pooled connections are closed before it ends (asyncpg ties them to their loop)."""
    if not inspect.iscoroutine(result):
        return result

    async def run() -> Any:
        try:
            return await result
        finally:
            await migrations.db.engine.dispose()

    return asyncio.run(run())
