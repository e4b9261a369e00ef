"""What the scale-out tests share: a table of rows, and where a read ran."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.engine import make_url

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


def wait_until(condition: Callable[[], Any], timeout: float, step: float = 0.02) -> float:
    """Seconds it took until ``condition()`` was true; fails past ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(step)
    return time.monotonic() - started


def hosts_url(*urls: str) -> str:
    """The first URL with the hosts of all of them: ``u:p@h1:1,h2:2/db`` (a multi-host URL)."""
    first = make_url(urls[0])
    hosts = ",".join(f"{make_url(url).host}:{make_url(url).port}" for url in urls)
    return f"postgresql://{first.username}:{first.password}@{hosts}/{first.database}"
