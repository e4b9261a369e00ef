"""``python -m bench [NAME ...]``: run the ``bench_*.py`` modules and write ``bench/results.md``.

Each module has ``run(pg_url, sqlite_url) -> list[dict]`` (rows: ``name``, ``ops_per_s``,
``baseline`` name or None, optional ``spread_pct``) and may have ``summarize(rows) -> str``.
PostgreSQL is ``DALKIT_TEST_POSTGRES_URL`` when set, else a throwaway harness cluster; SQLite is
a temporary file. Naming modules (``python -m bench pool``) runs only those.
"""

from __future__ import annotations

import importlib
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from bench.timing import MIN_REPEATS
from dalkit.testing import PostgresServer

BENCH_DIR = Path(__file__).parent
RESULTS = BENCH_DIR / "results.md"
POSTGRES_URL_ENV = "DALKIT_TEST_POSTGRES_URL"


def main(argv: Sequence[str]) -> int:
    modules = _modules(argv)
    if not modules:
        print(f"no bench module matches {' '.join(argv)!r}", file=sys.stderr)
        return 2
    # read before the bench adds its own load: anything here is someone else's work
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        pg_url = stack.enter_context(_postgres())
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="dalkit-bench-"))
        sqlite_url = f"sqlite:///{Path(directory) / 'bench.db'}"
        machine = _machine(pg_url)
        sections = []
        for name in modules:
            print(f"running bench.{name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            module = importlib.import_module(f"bench.{name}")
            rows = module.run(pg_url, sqlite_url)
            took = time.perf_counter() - started
            summary = module.summarize(rows) if hasattr(module, "summarize") else ""
            sections.append(_section(name, module.__doc__ or "", rows, took, summary))
        load_after = os.getloadavg()[0]
    report = _header(machine, load_before, load_after) + "\n".join(sections)
    print(report)
    if not argv:  # a partial run must not replace the record of the whole one
        RESULTS.write_text(report)
        print(f"written to {RESULTS}", file=sys.stderr)
    return 0


def _modules(wanted: Sequence[str]) -> list[str]:
    found = sorted(path.stem for path in BENCH_DIR.glob("bench_*.py"))
    if not wanted:
        return found
    return [name for name in found if any(w in name for w in wanted)]


@contextmanager
def _postgres() -> Iterator[str]:
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        # the psycopg driver is what every variant uses; the URL must name none
        yield make_url(external).set(drivername="postgresql").render_as_string(hide_password=False)
        return
    print("starting a throwaway PostgreSQL ...", file=sys.stderr, flush=True)
    with PostgresServer() as server:
        yield server.create_database("dalkit_bench")


def _machine(pg_url: str) -> dict[str, str]:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "cores": str(os.cpu_count()),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": platform.python_version(),
        "SQLAlchemy": version("sqlalchemy"),
        "PostgreSQL": row[0] if row else "?",
        "psycopg": version("psycopg"),
        "SQLite": sqlite3.sqlite_version,
    }


def _header(machine: Mapping[str, str], load_before: float, load_after: float) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = ", ".join(f"{key} {value}" for key, value in machine.items())
    busy = ""
    if load_before > 1.0:
        busy = (
            f"**The machine was already busy when the bench started (load {load_before:.1f}): "
            "other work shared the cores, so these figures are noisier than usual; compare "
            "ratios, not ops/s, and distrust a ratio within its spread.**\n\n"
        )
    title = (
        "# dalkit benchmarks\n\n"
        f"Run {now} by `make bench` (`python -m bench`); 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after (the bench and its PostgreSQL "
        "add about 1-2).\n\n"
    )
    method = (
        f"Machine: {facts}. The PostgreSQL server runs on the same machine, over TCP on "
        "loopback, with durability off (the test harness's settings).\n\n"
        f"Each figure is the median of at least {MIN_REPEATS} timed batches of about 0.2 s, "
        "unless a module says it times whole loads or cycles (and how many); "
        "the variants of a module take turns, in an order rotated every repeat, so that drift "
        "falls on all of them alike. *spread* is the interquartile range of the batches, as a "
        "share of the median. *ratio* is the median of the per-repeat ratios against the "
        "baseline's batch of the same repeat (above 1 is faster), which cancels the slow noise "
        "that widens each variant's own spread; *ratio spread* is its interquartile range.\n\n"
    )
    return title + busy + method


def _section(name: str, doc: str, rows: list[dict[str, Any]], took_s: float, summary: str) -> str:
    by_name = {row["name"]: row for row in rows}
    lines = [
        f"## {name}\n",
        doc.strip() + "\n",
        "| variant | ops/s | spread | baseline | ratio | ratio spread |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        baseline = row.get("baseline")
        ratio = row.get("ratio")
        if ratio is None and baseline is not None:
            ratio = row["ops_per_s"] / by_name[baseline]["ops_per_s"]
        lines.append(
            f"| {row['name']} | {row['ops_per_s']:,.0f} | {_pct(row.get('spread_pct'))} "
            f"| {baseline or ''} | {'' if ratio is None else f'{ratio:.3f}'} "
            f"| {_pct(row.get('ratio_spread_pct'))} |"
        )
    if summary:
        lines.append("\n" + summary)
    lines.append(f"\n({len(rows)} variants in {took_s:.0f} s)\n")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}%"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
