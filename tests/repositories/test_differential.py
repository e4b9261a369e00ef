"""Differential property tests: the same rows and reads, with awkward values (NULLs in sorted
columns, LIKE wildcards and backslashes, case, unicode, integer extremes, infinities, Decimals,
datetimes with UTC offsets, duplicate sort keys, values given as text or a boolean as 0/1),
give the in-memory repository's answer on SQLite and PostgreSQL, sync and async. Bounded and
derandomized, so CI runs the same examples in a few seconds."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncRepository, InMemoryRepository, Repository
from dalkit.errors import DalkitError

from . import differential
from .differential import Backends

SECRET = "the differential suite's cursor secret"


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "differential_things"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    label: Mapped[str | None] = mapped_column(sa.String(20))
    code: Mapped[str] = mapped_column(sa.String(20))
    n: Mapped[int | None] = mapped_column(sa.Integer)
    big: Mapped[int | None] = mapped_column(sa.BigInteger)
    f: Mapped[float | None] = mapped_column(sa.Float)
    amount: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 2))
    at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    seen: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))
    flag: Mapped[bool | None] = mapped_column(sa.Boolean)
    rank: Mapped[int] = mapped_column(sa.Integer)
    logged: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)  # naive
    score: Mapped[float] = mapped_column(sa.Float, default=0.0)


class Things(Repository[Thing]):
    cursor_secret = SECRET
    max_page_size = 1000


class AsyncThings(AsyncRepository[Thing]):
    cursor_secret = SECRET
    max_page_size = 1000


MemoryThings = InMemoryRepository.mirroring(Things)
SUITE = (Thing, (Things, AsyncThings))

# --- data ------------------------------------------------------------------------------------

_ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=5)), dt.timezone(-dt.timedelta(hours=8))]
_INSTANTS = [dt.datetime(2024, 1, 1, 7), dt.datetime(2024, 1, 1, 8), dt.datetime(2024, 1, 1, 12)]
TEXT = st.text(alphabet="aAbZé É%_\\/*?[ ", max_size=5)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "label": TEXT,
    "code": TEXT,
    "n": st.sampled_from([-(2**31), 2**31 - 1, 0, -1, 1, 2]),
    "big": st.sampled_from([-(2**63), 2**63 - 1, 2**53, 2**53 + 1, 0]),
    "f": st.sampled_from([0.0, -0.0, 1.5, -1.5, 1e308, 5e-324, math.inf, -math.inf]),
    "amount": st.sampled_from([Decimal("0"), Decimal("-0.00"), Decimal("0.10"), Decimal("1.01")]),
    "at": st.builds(
        lambda t, z: t.replace(tzinfo=dt.UTC).astimezone(z),
        st.sampled_from(_INSTANTS),
        st.sampled_from(_ZONES),
    ),
    "flag": st.booleans(),
    "rank": st.integers(0, 2),
}
VALUES["seen"] = VALUES["at"]
VALUES["score"] = VALUES["f"]
NULLABLE = ("label", "n", "big", "f", "amount", "at", "flag")
OPERATORS = {
    "label": ["eq", "lt", "in", "not_in", "like", "ilike", "contains", "startswith", "isnull"],
    "code": ["eq", "gt", "like", "ilike", "contains", "startswith"],
    "n": ["eq", "ne", "lt", "gte", "between", "in", "not_in", "isnull"],
    "big": ["eq", "lt", "gt", "between"],
    "f": ["eq", "ne", "lt", "gt"],
    "amount": ["eq", "ne", "lt", "gte"],
    "at": ["eq", "lt", "gte", "between"],
    "seen": ["lt", "gte"],
    "flag": ["eq", "ne", "isnull"],
    "rank": ["eq", "ne", "in"],
    "score": ["gt", "lte"],
}
SORTABLE = [*VALUES, "id"]
KEYSET = ["code", "seen", "rank", "score", "id"]  # the non-nullable fields


def _written_otherwise(value: Any) -> Any:
    """``value`` as a caller may give it in another type, which every backend coerces (the
    in-memory repository stored the text of a datetime as text, and sorted it so)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | Decimal | dt.datetime) or (
        isinstance(value, float) and math.isfinite(value)
    ):
        return value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return value


@st.composite
def things(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for ident in range(1, draw(st.integers(0, 7)) + 1):
        row: dict[str, Any] = {"id": ident}
        for name, values in VALUES.items():
            row[name] = None if name in NULLABLE and draw(st.booleans()) else draw(values)
            if draw(st.integers(0, 3)) == 0:
                row[name] = _written_otherwise(row[name])
        rows.append(row)
    return rows


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    chosen = {}
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(list(OPERATORS)))
        op = draw(st.sampled_from(OPERATORS[field]))
        values = VALUES[field]
        if op in ("in", "not_in"):
            value: Any = draw(st.lists(values, max_size=3))
        elif op == "between":
            value = [draw(values), draw(values)]
        elif op == "isnull":
            value = draw(st.booleans())
        elif op in ("like", "ilike"):
            value = draw(TEXT.filter(lambda t: (len(t) - len(t.rstrip("\\"))) % 2 == 0))
        else:
            value = draw(values)
        chosen[f"{field}__{op}"] = value
    return chosen


@st.composite
def sorts(draw: st.DrawFn, fields: list[str]) -> str | None:
    names = draw(st.lists(st.sampled_from(fields), unique=True, max_size=3))
    return ",".join(("-" if draw(st.booleans()) else "") + name for name in names) or None


@st.composite
def reads(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["list", "count", "paginate", "walk"]))
    if kind == "walk":
        backward = draw(st.booleans())
        limit = draw(st.integers(1, 3))
        return kind, {"limit": limit, "sort": draw(sorts(KEYSET)), "backward": backward}
    arguments: dict[str, Any] = draw(filters())
    if kind == "count":
        return kind, arguments
    arguments["sort"] = draw(sorts(SORTABLE))
    if kind == "paginate":
        arguments["page"] = draw(st.sampled_from([1, 2, 50]))
        arguments["per_page"] = draw(st.sampled_from([1, 2, 1000]))
        return kind, arguments
    arguments["limit"] = draw(st.sampled_from([None, 0, 1, 10**6]))
    arguments["offset"] = draw(st.sampled_from([None, 0, 2, 2**53]))
    return kind, arguments


# --- running the reads -------------------------------------------------------------------------

Outcome = Any


def _shown(value: Any) -> Outcome:
    if isinstance(value, Thing):
        return value.id
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if hasattr(value, "total"):
        return [_shown(value.items), value.total, value.pages, value.has_next]
    return value


class Walk:
    """A keyset walk: forward to the end, then (``backward``) back to the start."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        self.base = {"limit": arguments["limit"], "sort": arguments["sort"]}
        self.backward = arguments["backward"]
        self.pages: list[Outcome] = []
        self.page: Any = None
        self.going_back = False

    def next_call(self) -> dict[str, Any] | None:
        """The arguments of the next ``paginate_cursor``, or None when the walk is over."""
        page = self.page
        if page is None:
            return self.base
        if len(self.pages) > 40:
            return None
        if not self.going_back and page.next_cursor is not None:
            return {**self.base, "after": page.next_cursor}
        self.going_back = True
        if self.backward and page.prev_cursor is not None:
            return {**self.base, "before": page.prev_cursor}
        return None

    def took(self, page: Any) -> None:
        self.page = page
        self.pages.append(_shown(page.items))


def run_sync(repository: Any, kind: str, arguments: dict[str, Any]) -> Outcome:
    try:
        if kind != "walk":
            return _shown(getattr(repository, kind)(**arguments))
        walk = Walk(arguments)
        while (call := walk.next_call()) is not None:
            walk.took(repository.paginate_cursor(**call))
        return walk.pages
    except DalkitError as error:
        return type(error).__name__


async def run_async(repository: Any, kind: str, arguments: dict[str, Any]) -> Outcome:
    try:
        if kind != "walk":
            return _shown(await getattr(repository, kind)(**arguments))
        walk = Walk(arguments)
        while (call := walk.next_call()) is not None:
            walk.took(await repository.paginate_cursor(**call))
        return walk.pages
    except DalkitError as error:
        return type(error).__name__


def check_agreement(backends: Backends, rows: list[dict[str, Any]], ops: Any) -> None:
    backends.check(MemoryThings, rows, ops, (run_sync, run_async))


sqlite_backends, postgres_backends = differential.fixtures(*SUITE)


def _at(hour: int, offset: int) -> dt.datetime:
    zone = dt.timezone(dt.timedelta(hours=offset))
    return dt.datetime(2024, 1, 1, hour, tzinfo=dt.UTC).astimezone(zone)


# 12:00+05:00 is 07:00 UTC, before 08:00 UTC; SQLite stored the wall clock, 12:00
OFFSETS = [
    {"id": 1, "code": "a", "rank": 0, "seen": _at(7, 5), "at": _at(7, 5)},
    {"id": 2, "code": "a", "rank": 0, "seen": _at(8, 0), "at": _at(8, 0)},
]
OFFSET_READS = [
    ("list", {"sort": "at"}),
    ("count", {"at__lt": "2024-01-01T07:30:00+00:00"}),
    ("walk", {"limit": 1, "sort": "-seen", "backward": True}),
]
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def agree(backends_of: Callable[[], Backends]) -> Callable[..., None]:
    @PROPERTY
    @given(rows=things(), ops=st.lists(reads(), min_size=1, max_size=4))
    @example(rows=OFFSETS, ops=OFFSET_READS)
    def check(rows: list[dict[str, Any]], ops: Any) -> None:
        check_agreement(backends_of(), rows, ops)

    return check


def test_sqlite_answers_every_read_as_the_in_memory_repository(
    sqlite_backends: Backends,
) -> None:
    agree(lambda: sqlite_backends)()


def test_postgresql_answers_every_read_as_the_in_memory_repository(
    postgres_backends: Backends,
) -> None:
    agree(lambda: postgres_backends)()


def test_sqlite_stores_an_aware_datetime_in_utc_and_reads_it_back_aware(
    sqlite_backends: Backends,
) -> None:
    with sqlite_backends.db.session_factory() as session:
        session.execute(sa.delete(Thing))
        things = Things(session)
        things.add(Thing(id=1, code="a", rank=0, seen=_at(7, 5)))
        stored = session.scalar(sa.text("SELECT seen FROM differential_things"))
        session.expire_all()
        assert stored == "2024-01-01 07:00:00.000000"
        assert things.get(1).seen == dt.datetime(2024, 1, 1, 7, tzinfo=dt.UTC)
        session.rollback()


def test_an_aware_datetime_in_a_naive_column_is_kept_in_utc_as_update_keeps_it(
    sqlite_backends: Backends,
) -> None:
    def rows() -> list[Thing]:
        base = {"code": "a", "rank": 0, "seen": _at(7, 0)}
        return [
            Thing(id=1, logged=_at(7, 5), **base),
            Thing(id=2, logged=dt.datetime(2024, 1, 1, 8), **base),
        ]

    with sqlite_backends.db.session_factory() as session:
        session.execute(sa.delete(Thing))
        Things(session).add_many(rows())
        session.expire_all()
        for things in (Things(session), MemoryThings(rows())):
            assert [t.id for t in things.list(sort="logged")] == [1, 2]
            assert things.count(logged__lt="2024-01-01T07:30:00") == 1
            assert things.get(1).logged == dt.datetime(2024, 1, 1, 7)
            things.update(2, logged=_at(6, 5))  # 01:00 UTC
            assert [t.id for t in things.list(sort="logged")] == [2, 1]
        session.rollback()


def test_a_nan_sorts_and_compares_above_every_number_in_memory_as_on_postgresql(
    postgres_backends: Backends,
) -> None:
    scores = [2.0, math.nan, 1.0, math.nan, -math.inf, math.inf]
    base = {"code": "a", "rank": 0, "seen": _at(7, 0)}
    rows = [
        {"id": i, "score": s, "f": s, "amount": Decimal(s) if math.isnan(s) else None, **base}
        for i, s in enumerate(scores, 1)
    ]
    reads = [
        ("list", {"sort": "f"}),
        ("list", {"sort": "-amount"}),
        ("count", {"amount__gte": 0}),
        ("list", {"sort": "-score", "limit": 3}),
        ("count", {"f__gt": 0}),
        ("count", {"score__lte": 10**300}),
        ("walk", {"limit": 2, "sort": "score", "backward": True}),
    ]
    check_agreement(postgres_backends, rows, reads)
