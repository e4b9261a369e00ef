"""What the scale-out tests share: a table of rows, where a read ran, and the waits for what
happens in the background (a monitor's probe, a replica's replay), which poll the state itself
with a bound generous enough for a loaded CI machine and fail with what they saw."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from dalkit.engine.autoroute import PROBE as PROBE_OPTIONS

#: how long a wait for something asynchronous may take before the test fails: a loaded CI
#: machine took many seconds for what takes a monitor interval here
WAIT = 30.0

metadata = MetaData()
items = Table(
    "scale_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)

#: a table only create_all makes, while the replica's replay is paused; and a read of it
fresh_metadata = MetaData()
FRESH_COUNT = select(func.count()).select_from(
    Table("scale_fresh", fresh_metadata, Column("id", Integer, primary_key=True))
)

#: one statement that says both whether a row is there and which kind of node answered
PROBE = "SELECT (SELECT count(*) FROM scale_items WHERE id = :id), pg_is_in_recovery()"


def wait_until(
    condition: Callable[[], Any],
    timeout: float = WAIT,
    step: float = 0.02,
    seen: Callable[[], object] | None = None,
) -> float:
    """Seconds it took until ``condition()`` was true; fails past ``timeout``, with ``seen()``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(_late(timeout, seen))
        time.sleep(step)
    return time.monotonic() - started


async def wait_until_async(
    condition: Callable[[], Any],
    within: float = WAIT,
    step: float = 0.02,
    seen: Callable[[], object] | None = None,
) -> float:
    """`wait_until` on an event loop: its tasks (an async monitor) run meanwhile."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(_late(within, seen))
        await asyncio.sleep(step)
    return time.monotonic() - started


def _late(timeout: float, seen: Callable[[], object] | None) -> str:
    return f"not true within {timeout}s" + ("" if seen is None else f"; saw {seen()!r}")


class MonitorProbes:
    """Counts the replica monitor's probes of ``engines`` (a database's replica engines): the
    only statements run on them with dalkit's probe options.

    A monitor round probes each replica after the one before has ended, so two more probes
    started mean at least one whole round, findings recorded, since the count was taken.
    ``note()``, when given, is called as each probe starts and kept in ``notes`` (what the
    monitor had found until then, say), so a test can tell which round changed it however
    late it looks.
    """

    def __init__(self, engines: Any, note: Callable[[], object] | None = None) -> None:
        self._engines: list[Engine] = [
            engine.sync_engine if isinstance(engine, AsyncEngine) else engine for engine in engines
        ]
        self._lock = threading.Lock()  # the sync monitor's probes run on threads of their own
        self.count = 0
        self._note = note
        self.notes: list[object] = []
        for engine in self._engines:
            event.listen(engine, "before_cursor_execute", self._heard)

    def _heard(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        options = getattr(args[1], "execution_options", None) or {}
        if all(options.get(key) == value for key, value in PROBE_OPTIONS.items()):
            with self._lock:
                self.count += 1
                if self._note is not None:
                    self.notes.append(self._note())

    def rounds_from(self, count: int, rounds: int = 1) -> Callable[[], bool]:
        """A condition for the waits: ``rounds`` whole monitor rounds ended after the count was
        ``count`` (the one more started tells the last has ended)."""
        return lambda: self.count >= count + (rounds + 1) * len(self._engines)

    def close(self) -> None:
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._heard)


def hosts_url(*urls: str) -> str:
    """The first URL with the hosts of all of them: ``u:p@h1:1,h2:2/db`` (a multi-host URL)."""
    first = make_url(urls[0])
    hosts = ",".join(f"{make_url(url).host}:{make_url(url).port}" for url in urls)
    return f"postgresql://{first.username}:{first.password}@{hosts}/{first.database}"
