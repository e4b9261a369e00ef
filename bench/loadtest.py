"""``python -m bench.loadtest``: drive the Conduit example app on PostgreSQL with a bounded
number of concurrent clients for a bounded time; report requests per second, latency
percentiles, errors and the pool's wait statistics in ``bench/loadtest.md``.

A benchmark, not a test. The app runs under uvicorn on 127.0.0.1 in a thread of this process,
the clients in its main thread, so both share one interpreter: the figures are a floor. The
database is ``DALKIT_DATABASE_URL`` when set (it must be disposable: the run writes to it),
else a throwaway PostgreSQL cluster; the app's query cache is in memory, or in Redis with
``DALKIT_REDIS_URL``. ``LOADTEST_CLIENTS`` and ``LOADTEST_SECONDS`` bound the run (default 32
clients, 20 s).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "conduit"))

from conduit.app import create_app
from conduit.settings import Settings

from dalkit import AsyncDatabase
from dalkit.testing import PostgresServer

REPORT = Path(__file__).parent / "loadtest.md"
USERS = 20
SEED_ARTICLES = 200
TAGS = ("python", "sql", "asyncio", "postgres", "testing", "web")


@contextmanager
def postgres() -> Iterator[str]:
    external = os.environ.get("DALKIT_DATABASE_URL")
    if external:
        yield external
        return
    print("starting a throwaway PostgreSQL ...", file=sys.stderr, flush=True)
    with PostgresServer() as server:
        yield server.create_database("conduit_loadtest")


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free port of 127.0.0.1, in a thread; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Load:
    """Latencies and outcomes of one run, by request kind."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.kinds: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        self.latencies.append(seconds)
        self.kinds[kind] += 1
        if error is not None:
            self.errors[f"{kind}: {error}"] += 1


async def seed(http: httpx.AsyncClient) -> tuple[list[dict[str, str]], list[str]]:
    """Users (their auth headers), follows, and articles to read."""
    auths = []
    for n in range(USERS):
        body = {"user": {"username": f"u{n}", "email": f"u{n}@load.test", "password": f"pw{n}"}}
        response = await http.post("/api/users", json=body)
        response.raise_for_status()
        auths.append({"Authorization": f"Token {response.json()['user']['token']}"})
    for n in range(USERS):
        await http.post(f"/api/profiles/u{(n + 1) % USERS}/follow", headers=auths[n])
    slugs = []
    rng = random.Random(1)
    for n in range(SEED_ARTICLES):
        article = {
            "article": {
                "title": f"Article {n}",
                "description": "seeded",
                "body": "lorem ipsum " * 20,
                "tagList": rng.sample(TAGS, 2),
            }
        }
        response = await http.post("/api/articles", json=article, headers=auths[n % USERS])
        response.raise_for_status()
        slugs.append(response.json()["article"]["slug"])
    return auths, slugs


async def client(
    http: httpx.AsyncClient,
    rng: random.Random,
    auths: list[dict[str, str]],
    slugs: list[str],
    until: float,
    load: Load,
) -> None:
    while time.monotonic() < until:
        auth = rng.choice(auths)
        roll = rng.random()
        if roll < 0.35:
            kind, call = "list", http.get("/api/articles", params={"limit": "20"}, headers=auth)
        elif roll < 0.50:
            params = {"tag": rng.choice(TAGS), "limit": "10"}
            kind, call = "list by tag", http.get("/api/articles", params=params)
        elif roll < 0.60:
            kind, call = "feed", http.get("/api/articles/feed", headers=auth)
        elif roll < 0.72:
            kind, call = "article", http.get(f"/api/articles/{rng.choice(slugs)}", headers=auth)
        elif roll < 0.80:
            kind, call = "tags", http.get("/api/tags")
        elif roll < 0.87:
            slug = rng.choice(slugs)
            kind, call = "comments", http.get(f"/api/articles/{slug}/comments", headers=auth)
        elif roll < 0.92:
            body: dict[str, Any] = {"comment": {"body": "a comment"}}
            path = f"/api/articles/{rng.choice(slugs)}/comments"
            kind, call = "comment", http.post(path, json=body, headers=auth)
        elif roll < 0.97:
            path = f"/api/articles/{rng.choice(slugs)}/favorite"
            kind, call = "favorite", http.post(path, headers=auth)
        else:
            body = {
                "article": {"title": "Load", "description": "d", "body": "b", "tagList": ["web"]}
            }
            kind, call = "publish", http.post("/api/articles", json=body, headers=auth)
        started = time.perf_counter()
        error = None
        try:
            response = await call
            if response.status_code >= 400:
                error = str(response.status_code)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        load.record(kind, time.perf_counter() - started, error)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def drive(base_url: str, clients: int, seconds: float, db: AsyncDatabase) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        print("seeding ...", file=sys.stderr, flush=True)
        auths, slugs = await seed(http)
        db.pop_stats()  # the counters from here on are the run's
        print(f"{clients} clients for {seconds:.0f} s ...", file=sys.stderr, flush=True)
        load = Load()
        started = time.monotonic()
        until = started + seconds
        rngs = [random.Random(n) for n in range(clients)]
        await asyncio.gather(*(client(http, r, auths, slugs, until, load) for r in rngs))
        elapsed = time.monotonic() - started
    cache = db.cache.get_stats() if db.cache is not None else {}
    return {"load": load, "elapsed": elapsed, "pool": db.pool_stats(), "cache": cache}


def report(result: dict[str, Any], clients: int, pg_version: str, load_avg: float) -> str:
    load: Load = result["load"]
    ms = [s * 1000 for s in load.latencies]
    pool = result["pool"]
    total = len(ms)
    lines = [
        "# Load test: the Conduit example app on PostgreSQL",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make loadtest`"
        f" (`python -m bench.loadtest`) on {platform.machine()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()},"
        f" PostgreSQL {pg_version}. The app (uvicorn, one worker) and the {clients} clients"
        " share one process: a floor, not a ceiling. The database had "
        f"{USERS} users and {SEED_ARTICLES} seeded articles. The machine's load average"
        f" before the run was {load_avg:.1f} (other work on it slows every figure).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {total} in {result['elapsed']:.1f} s |",
        f"| requests per second | {total / result['elapsed']:.0f} |",
        f"| latency p50 | {percentile(ms, 0.50):.1f} ms |",
        f"| latency p95 | {percentile(ms, 0.95):.1f} ms |",
        f"| latency p99 | {percentile(ms, 0.99):.1f} ms |",
        f"| latency mean | {statistics.fmean(ms):.1f} ms |",
        f"| errors | {sum(load.errors.values())} |",
        "",
        "Request mix: "
        + ", ".join(f"{kind} {count}" for kind, count in load.kinds.most_common())
        + ".",
        "",
    ]
    if load.errors:
        lines += ["Errors:", ""]
        lines += [f"- {what}: {count}" for what, count in load.errors.most_common()]
        lines.append("")
    lines += [
        "Pool statistics over the run (`db.pool_stats()`):",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in sorted(pool.items())]
    if result["cache"]:
        lines += [
            "",
            f"Query cache over the run ({result['cache_backend']}, `db.cache.get_stats()`):",
            "",
            "| key | value |",
            "|---|---|",
        ]
        lines += [f"| {key} | {value} |" for key, value in sorted(result["cache"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    load_avg = os.getloadavg()[0]  # read before adding load: anything here is other work
    clients = int(os.environ.get("LOADTEST_CLIENTS", "32"))
    seconds = float(os.environ.get("LOADTEST_SECONDS", "20"))
    with postgres() as url:
        async_url = make_url(url).set(drivername="postgresql+asyncpg")
        settings = Settings(
            database_url=async_url.render_as_string(hide_password=False),
            jwt_secret="loadtest-secret-of-at-least-32-bytes",
            secret_key="loadtest-cursor-secret",
            redis_url=os.environ.get("DALKIT_REDIS_URL") or None,  # else the memory backend
        )
        app = create_app(settings=settings)  # its lifespan creates the schema and disposes
        db: AsyncDatabase = app.state.db
        with serving(app) as base_url:
            # the server's loop owns the pool's connections: only read its statistics here
            result = asyncio.run(drive(base_url, clients, seconds, db))
        result["cache_backend"] = "Redis" if settings.redis_url else "in memory"
        pg_version = str(db.engine.dialect.server_version_info or "?")
    text = report(result, clients, ".".join(pg_version.strip("()").split(", ")), load_avg)
    REPORT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
