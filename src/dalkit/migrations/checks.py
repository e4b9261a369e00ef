"""The checks a project runs against its own migrations, on an empty database: a single head;
empty -> head -> base -> head with the same schema; no drift; each downgrade leaves no trace.
They take a sync ``Migrations[Database]`` (the CLI opens one with the URL's sync driver)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dalkit import Database
from dalkit.migrations.commands import Migrations
from dalkit.migrations.drift import schema_snapshot
from dalkit.migrations.errors import MigrationError

__all__ = [
    "MigrationCheckError",
    "check_downgrades_leave_no_trace",
    "check_no_drift",
    "check_roundtrip",
    "check_single_head",
    "run_all_checks",
]


class MigrationCheckError(MigrationError):
    """Raised when a project's migrations fail one of the built-in checks."""


def check_single_head(migrations: Migrations[Database]) -> None:
    """The history has exactly one head (no unmerged branches)."""
    heads = [info.revision for info in migrations.history() if info.is_head]
    if len(heads) != 1:
        raise MigrationCheckError(f"expected one head, found {len(heads)}: {', '.join(heads)}")


def check_roundtrip(migrations: Migrations[Database]) -> None:
    """Empty -> head -> base -> head: the two head schemas are identical, base leaves only the
    version table."""
    _require_empty(migrations)
    migrations.upgrade("heads", allow_unsafe=True)
    first = _snapshot(migrations)
    migrations.downgrade("base")
    leftover = set(_snapshot(migrations)["tables"])
    if leftover:
        raise MigrationCheckError(f"downgrade to base left tables behind: {sorted(leftover)}")
    migrations.upgrade("heads", allow_unsafe=True)
    second = _snapshot(migrations)
    if first != second:
        raise MigrationCheckError(f"upgrade after downgrade differs: {_diff(first, second)}")


def check_no_drift(migrations: Migrations[Database]) -> None:
    """At the head, the database matches the models (raises SchemaDriftError otherwise)."""
    migrations.upgrade("heads", allow_unsafe=True)
    migrations.check()


def check_downgrades_leave_no_trace(migrations: Migrations[Database]) -> None:
    """For every revision from the base: up one, down one, and the schema is as before."""
    migrations.downgrade("base")
    for info in migrations.history():
        before = _snapshot(migrations)
        migrations.upgrade(info.revision, allow_unsafe=True)
        migrations.downgrade("-1")
        after = _snapshot(migrations)
        if before != after:
            raise MigrationCheckError(
                f"downgrade of {info.revision} ({info.message}) left a trace: "
                f"{_diff(before, after)}"
            )
        migrations.upgrade(info.revision, allow_unsafe=True)


def run_all_checks(migrations: Migrations[Database]) -> list[str]:
    """Run every check in order; the names of those that passed (the first failure raises)."""
    checks: list[tuple[str, Callable[[Migrations[Database]], None]]] = [
        ("single head", check_single_head),
        ("up/down/up roundtrip", check_roundtrip),
        ("downgrades leave no trace", check_downgrades_leave_no_trace),
        ("no drift", check_no_drift),
    ]
    for _, check in checks:
        check(migrations)
    return [name for name, _ in checks]


def _require_empty(migrations: Migrations[Database]) -> None:
    if migrations.current():
        raise MigrationCheckError(
            "the round-trip checks downgrade to base: run them on an empty scratch database"
        )


def _snapshot(migrations: Migrations[Database]) -> dict[str, Any]:
    with migrations.db.engine.connect() as connection:
        snapshot = schema_snapshot(connection)
    # the version table comes with the first upgrade and stays: not a trace of any revision
    snapshot["tables"].pop(migrations.settings.version_table, None)
    return snapshot


def _diff(first: dict[str, Any], second: dict[str, Any]) -> str:
    changed = []
    for table in sorted(set(first["tables"]) | set(second["tables"])):
        if first["tables"].get(table) != second["tables"].get(table):
            changed.append(table)
    others = [key for key in first if key != "tables" and first.get(key) != second.get(key)]
    return f"tables {changed}, {others}" if others else f"tables {changed}"
