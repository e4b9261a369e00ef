"""Reads reuse one statement per shape with their values bound (dalkit.query.bound): the same rows
as a statement built afresh, on SQLite and PostgreSQL, for every operator and every keyset cursor;
bounded; bypassed for eager loads."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import Repository, Spec
from dalkit.query.bound import StatementCache
from dalkit.repository.base import QueryPlan

from .models import EPOCH, User


class Users(Repository[User]):
    cursor_secret = "a test secret of sixteen bytes or more"


def seed(session: Session) -> None:
    for n in range(12):
        session.add(
            User(
                email=f"user{n}@example.com",
                name=["Ada", "ada", "Bob", "b_b", "50%", "Cy"][n % 6] + str(n),
                age=None if n % 4 == 0 else 20 + n,
                score=n * 10,
                created_at=EPOCH + dt.timedelta(hours=n),
            )
        )
    session.flush()


def fresh(users: Users, **kwargs: Any) -> list[int]:
    """The ids the statement built afresh (the path before statements were reused) reads."""
    q = users._q
    specs = kwargs.pop("specs", ())
    keys = q.sort_keys(kwargs.pop("sort", None))
    limit, offset = kwargs.pop("limit", None), kwargs.pop("offset", None)
    read = q.read(specs, kwargs, False, keys, None, limit=limit, offset=offset)
    statement = q.select(read, users.session.get_bind().dialect.name)
    return [user.id for user in users.session.scalars(statement)]


READS: list[dict[str, Any]] = [
    {"name": "Ada0"},
    {"name__ne": "Ada0", "sort": "-score"},
    {"age__lt": 25},
    {"age__lte": 25, "score__gte": 30},
    {"age__gt": 25, "limit": 2},
    {"score__in": [10, 30, 50]},
    {"score__not_in": [10, 30]},
    {"score__in": []},
    {"score__not_in": []},
    {"score__between": [20, 70], "sort": "-created_at", "limit": 3, "offset": 1},
    {"age__isnull": True},
    {"age": None},
    {"age__ne": None},
    {"name__contains": "d"},
    {"name__startswith": "b_"},
    {"name__like": "%a%"},
    {"name__ilike": "A%"},
    {"name__contains": "%"},
    {"specs": (Spec(score__gt=50) | ~Spec(age__isnull=False),)},
    {"specs": (Spec(),)},
    {"sort": "id", "offset": 3},
]


@pytest.mark.parametrize("read", READS, ids=[str(sorted(r)) for r in READS])
def test_a_reused_statement_reads_what_a_fresh_one_reads(
    sql_session: Session, read: dict[str, Any]
) -> None:
    seed(sql_session)
    users = Users(sql_session)
    expected = fresh(users, **dict(read))
    arguments = dict(read)
    specs = arguments.pop("specs", ())
    assert [u.id for u in users.list(*specs, **arguments)] == expected
    # the second call takes the cached statement
    assert [u.id for u in users.list(*specs, **arguments)] == expected


def test_one_statement_serves_every_value_of_a_shape(sql_session: Session) -> None:
    seed(sql_session)
    users = Users(sql_session)
    dialect = sql_session.get_bind().dialect.name
    q = users._q
    statements = set()
    for score, offset in ((10, 1), (50, 2), (90, 3)):
        read = q.read((), {"score__gte": score}, False, q.sort_keys("id"), limit=2, offset=offset)
        statement, params = q.bound_select(read, dialect)
        statements.add(id(statement))
        assert params == {"dk_p0": score, "dk_limit": 2, "dk_offset": offset}
        found = [u.id for u in users.list(score__gte=score, sort="id", limit=2, offset=offset)]
        assert found == fresh(users, score__gte=score, sort="id", limit=2, offset=offset)
    assert len(statements) == 1
    # another sort is another shape
    users.list(score__gte=10, sort="-id", limit=2, offset=1)
    assert len(q._statements) >= 2


def test_eager_loads_build_their_statement_each_time(
    sql_session: Session,
) -> None:
    seed(sql_session)
    users = Users(sql_session)
    q: QueryPlan = users._q
    dialect = sql_session.get_bind().dialect.name
    read = q.read((), {}, False, q.sort_keys(None), {"posts": "selectin"}, limit=3)
    first, params = q.bound_select(read, dialect)
    second, _ = q.bound_select(read, dialect)
    assert params == {}
    assert first is not second
    page = users.paginate_cursor(limit=5)
    assert len(page.items) == 5
    loaded = users.list(load=["posts"], limit=3)
    assert [u.posts for u in loaded] == [[], [], []]
    assert [u.id for u in loaded] == [u.id for u in users.list(limit=3)]


def test_the_statement_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = StatementCache(size=2)
    a, b, c = (sa.select(sa.literal(n)) for n in range(3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # now b is the least recently used
    cache.put("c", c)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is a
    assert cache.get("c") is c


def _cursor_statement(users: Users, sort: str, cursor: str) -> tuple[Any, dict[str, Any]]:
    q, dialect = users._q, users.session.get_bind().dialect.name
    window, _ = q.keyset(sort, cursor, None, users._cursor_codec())
    read = q.read((), {}, False, window.read_keys, None, limit=4, window=window)
    return q.bound_select(read, dialect)


@pytest.mark.parametrize("sort", ["created_at", "-score,-id"])
def test_every_cursor_of_a_walk_reuses_one_statement_and_reads_the_walk_in_order(
    sql_session: Session, sort: str
) -> None:
    seed(sql_session)
    users = Users(sql_session)
    walked: list[int] = []
    statements: list[Any] = []  # kept alive: an id may be reused once its object is gone
    page = users.paginate_cursor(limit=3, sort=sort)
    while True:
        walked += [u.id for u in page.items]
        if not page.has_more:
            break
        assert page.next_cursor is not None
        statement, params = _cursor_statement(users, sort, page.next_cursor)
        statements.append(statement)
        assert {"dk_seek_0", "dk_seek_1", "dk_limit"} <= set(params)
        page = users.paginate_cursor(limit=3, sort=sort, after=page.next_cursor)
    assert walked == fresh(users, sort=sort)
    assert len(statements) == 3  # 12 rows, pages of 3: three cursors
    assert all(s is statements[0] for s in statements)
    back = users.paginate_cursor(limit=3, sort=sort, before=page.prev_cursor)
    assert [u.id for u in back.items] == walked[-6:-3]


@pytest.mark.parametrize("sort", ["-score,name", "-score"])  # the tie-breaker, id, ascends
def test_a_seek_whose_keys_run_both_ways_reuses_one_statement_too(
    sql_session: Session, sort: str
) -> None:
    seed(sql_session)
    users = Users(sql_session)
    first = users.paginate_cursor(limit=3, sort=sort)
    assert first.next_cursor is not None
    one, params = _cursor_statement(users, sort, first.next_cursor)
    two, _ = _cursor_statement(users, sort, first.next_cursor)
    assert one is two
    assert {"dk_seek_0", "dk_seek_1", "dk_limit"} <= set(params)
    second = users.paginate_cursor(limit=3, sort=sort, after=first.next_cursor)
    assert [u.id for u in first.items + second.items] == fresh(users, sort=sort)[:6]


def test_a_filtered_seek_binds_the_filter_and_the_boundary_apart(sql_session: Session) -> None:
    seed(sql_session)
    users = Users(sql_session)
    first = users.paginate_cursor(limit=2, sort="-score", score__gte=30)
    assert first.next_cursor is not None
    second = users.paginate_cursor(limit=2, sort="-score", score__gte=30, after=first.next_cursor)
    walked = [u.id for u in first.items + second.items]
    assert walked == fresh(users, sort="-score", score__gte=30)[:4]


@pytest.mark.parametrize(("limit", "offset"), [(2**31, None), (None, 2**31), (2**53, None)])
def test_a_limit_or_offset_past_32_bits_reads_rows(
    sql_session: Session, limit: int | None, offset: int | None
) -> None:
    # PostgreSQL's LIMIT and OFFSET are bigint: an int4 parameter would be out of range
    seed(sql_session)
    users = Users(sql_session)
    expected = [] if offset else fresh(users, sort="id")
    assert [u.id for u in users.list(sort="id", limit=limit, offset=offset)] == expected
    loaded = users.list(sort="id", load=["posts"], limit=limit, offset=offset)
    assert [u.id for u in loaded] == expected
