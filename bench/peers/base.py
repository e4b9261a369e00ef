"""What every peer shares: the table, the rows, the connection target and the peer interface
(``setup``, ``get``, ``page``, ``insert``, optional ``bulk``, ``teardown``) the runner drives."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import make_url

from dalkit.errors import DalkitError

TABLE = "peer_items"
BULK_TABLE = "peer_bulk"
COLUMNS = ("id", "name", "email", "category", "score", "created_at")
ROWS = 100_000
CATEGORIES = 100
PAGE_SIZE = 20
#: inserted rows land outside every page's category, so inserts never change what a page reads
INSERT_CATEGORY = -1
T0 = dt.datetime(2024, 1, 1)

Row = dict[str, Any]

# One schema for everyone: the peers map their models onto these tables and never create them.
DDL = [
    f"DROP TABLE IF EXISTS {TABLE}, {BULK_TABLE}",
    *(
        f"CREATE TABLE {name} (id serial PRIMARY KEY, name varchar(100) NOT NULL, "
        "email varchar(100) NOT NULL, category integer NOT NULL, score integer NOT NULL, "
        "created_at timestamp NOT NULL)"
        for name in (TABLE, BULK_TABLE)
    ),
    # the page query filters by category and sorts newest first
    f"CREATE INDEX {TABLE}_category_created ON {TABLE} (category, created_at)",
    f"INSERT INTO {TABLE} (name, email, category, score, created_at) "
    "SELECT 'user ' || i, 'user' || i || '@example.com', i % "
    f"{CATEGORIES}, i % 10000, TIMESTAMP '2024-01-01' + i * INTERVAL '1 second' "
    f"FROM generate_series(1, {ROWS}) AS i",
    f"VACUUM ANALYZE {TABLE}",
]


class PeerError(DalkitError):
    """A peer or the bench's own machinery could not do what the run needs."""


@dataclasses.dataclass(frozen=True)
class Target:
    """The bench's PostgreSQL, in the shapes the peers' configuration wants."""

    url: str  # driverless, with the password: never print it
    host: str
    port: int
    user: str
    password: str = dataclasses.field(repr=False)
    database: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parsed = make_url(url)
        return cls(
            url=parsed.set(drivername="postgresql").render_as_string(hide_password=False),
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            password=parsed.password or "",
            database=parsed.database or "postgres",
        )

    def sqlalchemy_url(self, driver: str) -> str:
        return (
            make_url(self.url)
            .set(drivername=f"postgresql+{driver}")
            .render_as_string(hide_password=False)
        )

    def conninfo(self) -> str:
        return self.url

    def redact(self, text: str) -> str:
        """``text`` with the password masked, for anything shown to a person."""
        return text.replace(self.password, "***") if self.password else text


def insert_row(i: int) -> Row:
    return {
        "name": f"new {i}",
        "email": f"new{i}@example.com",
        "category": INSERT_CATEGORY,
        "score": i % 10_000,
        "created_at": T0 + dt.timedelta(seconds=i),
    }


def bulk_rows(count: int) -> list[Row]:
    """Rows with explicit ids, so that every loader writes the same columns."""
    return [{"id": i + 1, **insert_row(i)} for i in range(count)]


class SyncPeer(Protocol):
    label: str

    def setup(self, target: Target, pool_size: int) -> None: ...
    def get(self, ident: int) -> object: ...
    def page(self, category: int) -> Sequence[object]: ...
    def insert(self, row: Row) -> object: ...
    def teardown(self) -> None: ...


@runtime_checkable
class SyncBulk(Protocol):
    label: str

    def bulk(self, rows: Sequence[Row]) -> None: ...


class AsyncPeer(Protocol):
    label: str

    async def setup(self, target: Target, pool_size: int) -> None: ...
    async def get(self, ident: int) -> object: ...
    async def page(self, category: int) -> Sequence[object]: ...
    async def insert(self, row: Row) -> object: ...
    async def teardown(self) -> None: ...


@runtime_checkable
class AsyncBulk(Protocol):
    label: str

    async def bulk(self, rows: Sequence[Row]) -> None: ...
