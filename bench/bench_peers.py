"""Peers: the same requests through dalkit's default way (as the README shows it), SQLAlchemy
ORM and Core, Django, peewee, Tortoise, Piccolo, advanced-alchemy and the raw drivers (psycopg,
asyncpg), on one 100,000-row table of the bench's PostgreSQL.

Every library is used the way its documentation shows, one request per call (its own
transaction or autocommit statement), async ones over a pool of 8. Each operation's variants are
timed interleaved (bench.timing); the ratio is the variant against dalkit's default way, above 1
meaning faster than dalkit. Loads are 100,000 rows into an emptied table, in rows/s. The
statements each request sends are counted on the server (``log_statement``). Needs the ``peers``
dependency group: ``make bench-peers``. Writes ``bench/results-peers.md`` and
``bench/charts/peers-*.png``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psycopg

from bench.peers.base import Target

BENCH_DIR = Path(__file__).parent
RESULTS = BENCH_DIR / "results-peers.md"
#: the ``peers`` dependency group, by import name
GROUP = ("django", "tortoise", "piccolo", "peewee", "advanced_alchemy", "matplotlib")
PACKAGES = (
    "sqlalchemy",
    "psycopg",
    "asyncpg",
    "django",
    "peewee",
    "psycopg2-binary",
    "tortoise-orm",
    "piccolo",
    "advanced-alchemy",
)


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    missing = [name for name in GROUP if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"bench.bench_peers skipped: {', '.join(missing)} not installed; "
            "run `make bench-peers` (the `peers` dependency group)"
        )
        return []
    from bench.peers import report, runner

    target = Target.from_url(pg_url)
    load_before = os.getloadavg()[0]
    found_run = runner.run(target)
    rows = report.rows(found_run)
    header = _header(target, load_before, os.getloadavg()[0], found_run.seconds)
    report.write(found_run, rows, RESULTS, header)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "Skipped: the `peers` dependency group is not installed (`make bench-peers`)."
    from bench.peers import report

    return "\n".join(
        [
            *report.targets(rows),
            "",
            f"Full tables, statements per request and charts: {RESULTS.name}, charts/peers-*.png",
        ]
    )


def _header(target: Target, load_before: float, load_after: float, seconds: float) -> str:
    with psycopg.connect(target.conninfo()) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = (__doc__ or "").strip()
    busy = ""
    if load_before > 1.0:
        busy = (
            f"**The machine was already busy (load {load_before:.1f} on {os.cpu_count()} cores): "
            "other work shared the cores, so ops/s are noisy; compare ratios, and distrust a "
            "ratio within its spread.**\n\n"
        )
    return (
        "# dalkit against its peers\n\n"
        f"Run {now} by `make bench-peers` (`python -m bench peers`) in {seconds:.0f} s; "
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after.\n\n"
        f"{busy}{doc}\n\n"
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, PostgreSQL {row[0] if row else '?'} on loopback "
        f"(durability off, the test harness's settings). Libraries: {versions}.\n\n"
        "*spread* is the interquartile range of a variant's batches as a share of its median; "
        "*ratio* is the median of per-repeat ratios against dalkit's batch of the same repeat, "
        "and *ratio spread* its interquartile range. *CPU µs/request* is the median of the "
        "bench process's own CPU time per request (the library, its driver and the event loop; "
        "not the server's): other work on the cores disturbs it far less than ops/s, and it is "
        "what bounds the 32-task figures. *statements* are those the server logged "
        "for one warm request (`pool reset` is asyncpg's pool resetting a connection it takes "
        "back: `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`). A loader "
        "whose first load took over 4 s ran once (spread: *one run*).\n"
    )


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
