"""Repositories: ``repository.get`` against ``session.get``, a cached Core select and the raw
driver; ``bulk_insert`` of 200,000 rows against raw COPY / ``executemany`` and SQLAlchemy's ORM
bulk insert; offset against keyset pagination at page 1,000.

``get`` reads a different row of 10,000 each call, so neither the repository nor the session
serves it from the identity map (the entity is dropped before the next call). Bulk loads go into
an emptied table, one 200,000-row load per variant in each of 9 repeats, the variants
interleaved; their ops/s are rows per second. Pagination reads pages of 20 from 50,000 rows by
primary key: page 1,000 skips 19,980 rows with OFFSET, or seeks past them with a cursor taken
beforehand.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from time import perf_counter
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.timing import interleaved_samples, median_and_spread, paired_ratio
from dalkit import Database, Repository

GET_ROWS = 10_000
BULK_ROWS = 200_000
# a load is a whole 200,000-row insert (up to 4 s for the ORM's): 9 of them, not the 20 batches
# of the other modules, and 5 left the ratio to the raw driver at the mercy of one slow load
BULK_REPEATS = 9
PAGE_ROWS = 50_000
PER_PAGE = 20
DEEP_PAGE = 1_000
#: targets from the issue: ratio of the variant to its baseline
TARGETS = {
    "repository.get": ("session.get", 1.0),
    "repository.bulk_insert": ("raw driver", 0.8),  # 0.7 on SQLite, see summarize()
    "paginate_cursor at depth 1,000": ("paginate_cursor first page", 0.8),
}


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "bench_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100))
    name: Mapped[str] = mapped_column(sa.String(100))
    balance: Mapped[int]
    created_at: Mapped[dt.datetime]


class Accounts(Repository[Account]):
    cursor_secret = "bench-cursor-secret-16b"  # plain sessions carry no configured key
    max_page_size = 100


T0 = dt.datetime(2024, 1, 1)


def _account(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"user{i}@example.com",
        "name": f"user {i}",
        "balance": i % 10_000,
        "created_at": T0 + dt.timedelta(seconds=i),
    }


def run(pg_url: str, sqlite_url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend, url in (("postgresql", pg_url), ("sqlite", sqlite_url)):
        driver = "postgresql+psycopg" if backend == "postgresql" else "sqlite"
        full_url = make_url(url).set(drivername=driver).render_as_string(hide_password=False)
        db = Database(full_url, secret_key="bench-cursor-secret-16b")
        try:
            rows += _get(backend, db, url)
            rows += _bulk(backend, db, url)
            rows += _pages(backend, db)
        finally:
            with db.engine.begin() as connection:
                Base.metadata.drop_all(connection)
            db.dispose()
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    by_name = {row["name"]: row for row in rows}
    lines = []
    for backend in ("postgresql", "sqlite"):
        for variant, (baseline, target) in TARGETS.items():
            if variant == "repository.bulk_insert" and backend == "sqlite":
                target = 0.7
            row = by_name[f"{backend}: {variant}"]
            ratio = row["ratio"]
            verdict = "meets" if ratio >= target else "misses"
            lines.append(
                f"- {backend}: {variant} runs at {ratio:.2f}x {baseline}: {verdict} the "
                f"{target:.1f}x target"
            )
        offset = by_name[f"{backend}: paginate page 1,000"]["ops_per_s"]
        keyset = by_name[f"{backend}: paginate_cursor at depth 1,000"]["ops_per_s"]
        lines.append(f"- {backend}: at page 1,000 keyset is {keyset / offset:.1f}x offset")
    return "\n".join(lines)


def _reset(db: Database, count: int) -> None:
    with db.engine.begin() as connection:
        Base.metadata.drop_all(connection)
        Base.metadata.create_all(connection)
    if count:
        with db.session() as session:
            Accounts(session).bulk_insert(_account(i) for i in range(count))


def _rows_from(
    name: str, backend: str, samples: dict[str, list[float]], baselines: dict[str, str | None]
) -> list[dict[str, Any]]:
    out = []
    for variant, batches in samples.items():
        ops, spread = median_and_spread(batches)
        row: dict[str, Any] = {
            "name": f"{backend}: {variant}",
            "ops_per_s": ops,
            "spread_pct": spread,
            "baseline": None,
        }
        baseline = baselines.get(variant)
        if baseline is not None:
            ratio, ratio_spread = paired_ratio(batches, samples[baseline])
            row.update(
                baseline=f"{backend}: {baseline}", ratio=ratio, ratio_spread_pct=ratio_spread
            )
        out.append(row)
    return out


def _cycle(count: int) -> Callable[[], int]:
    state = {"i": 0}

    def next_id() -> int:
        state["i"] = (state["i"] + 7919) % count  # a prime stride: scattered, every row
        return state["i"] + 1

    return next_id


def _get(backend: str, db: Database, url: str) -> list[dict[str, Any]]:
    _reset(db, GET_ROWS + 1)
    with ExitStack() as stack:
        session = stack.enter_context(Session(db.engine))
        repository = Accounts(session)
        connection = stack.enter_context(db.engine.connect())
        core = sa.select(Account.__table__).where(Account.__table__.c.id == sa.bindparam("id"))
        raw = stack.enter_context(_raw_connection(backend, url))
        sql = "SELECT id, email, name, balance, created_at FROM bench_accounts WHERE id = "
        sql += "%s" if backend == "postgresql" else "?"
        ids = {name: _cycle(GET_ROWS) for name in ("repo", "session", "core", "raw")}

        def raw_get() -> object:
            cursor = raw.execute(sql, (ids["raw"](),))
            return cursor.fetchone()

        samples = interleaved_samples(
            {
                "repository.get": lambda: repository.get(ids["repo"]()),
                "session.get": lambda: session.get(Account, ids["session"]()),
                "Core select, cached statement": lambda: connection.execute(
                    core, {"id": ids["core"]()}
                ).one(),
                "raw driver": raw_get,
            }
        )
        session.rollback()
        connection.rollback()
    return _rows_from(
        "get",
        backend,
        samples,
        {
            "repository.get": "session.get",
            "session.get": "raw driver",
            "Core select, cached statement": "raw driver",
        },
    )


def _raw_connection(backend: str, url: str) -> Any:
    if backend == "postgresql":
        return psycopg.connect(url, autocommit=True)
    path = make_url(url).database
    assert path is not None
    return _closing_sqlite(path)


class _closing_sqlite:
    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)

    def __enter__(self) -> sqlite3.Connection:
        return self.connection

    def __exit__(self, *exc: object) -> None:
        self.connection.close()


def _bulk(backend: str, db: Database, url: str) -> list[dict[str, Any]]:
    data = [_account(i) for i in range(BULK_ROWS)]
    tuples = [tuple(row.values()) for row in data]
    columns = list(data[0])

    def repository_load() -> None:
        with db.session() as session:
            Accounts(session).bulk_insert(data, chunk_size=50_000)

    def orm_load() -> None:
        with db.session() as session:
            session.execute(sa.insert(Account), data)

    def raw_load() -> None:
        if backend == "postgresql":
            with psycopg.connect(url) as connection, connection.cursor() as cursor:
                statement = f"COPY bench_accounts ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(statement) as copy:
                    copy.set_types(["int4", "varchar", "varchar", "int4", "timestamp"])
                    for row in tuples:
                        copy.write_row(row)
        else:
            path = make_url(url).database
            assert path is not None
            connection = sqlite3.connect(path)
            try:
                # SQLite has no datetime type: the text SQLAlchemy would store, made up front
                texts = [(*row[:4], row[4].isoformat(" ")) for row in tuples]
                with connection:
                    connection.executemany(
                        f"INSERT INTO bench_accounts ({', '.join(columns)}) VALUES (?, ?, ?, ?, ?)",
                        texts,
                    )
            finally:
                connection.close()

    variants = {
        "repository.bulk_insert": repository_load,
        "raw driver": raw_load,
        "SQLAlchemy ORM bulk insert": orm_load,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(BULK_REPEATS):
        names = list(variants)
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            _reset(db, 0)
            started = perf_counter()
            variants[name]()
            samples[name].append(BULK_ROWS / (perf_counter() - started))
    _reset(db, 0)
    return _rows_from(
        "bulk",
        backend,
        samples,
        {"repository.bulk_insert": "raw driver", "SQLAlchemy ORM bulk insert": "raw driver"},
    )


def _pages(backend: str, db: Database) -> list[dict[str, Any]]:
    _reset(db, PAGE_ROWS)
    with Session(db.engine) as session:
        repository = Accounts(session)
        # the cursor a client would hold after walking 999 pages
        deep = repository.list(limit=1, offset=(DEEP_PAGE - 1) * PER_PAGE - 1)[0]
        cursor = repository._plan().codec.encode(repository._plan().sort_keys(None), deep)
        samples = interleaved_samples(
            {
                "paginate page 1": lambda: repository.paginate(page=1, per_page=PER_PAGE),
                "paginate page 1,000": lambda: repository.paginate(
                    page=DEEP_PAGE, per_page=PER_PAGE
                ),
                "paginate_cursor first page": lambda: repository.paginate_cursor(limit=PER_PAGE),
                "paginate_cursor at depth 1,000": lambda: repository.paginate_cursor(
                    limit=PER_PAGE, after=cursor
                ),
            }
        )
        first = repository.paginate(page=DEEP_PAGE, per_page=PER_PAGE).items
        second = repository.paginate_cursor(limit=PER_PAGE, after=cursor).items
        assert [a.id for a in first] == [a.id for a in second], "the two paginations disagree"
        session.rollback()
    return _rows_from(
        "pages",
        backend,
        samples,
        {
            "paginate page 1,000": "paginate page 1",
            "paginate_cursor at depth 1,000": "paginate_cursor first page",
        },
    )
