"""QueryBuilder: identifiers checked against the metadata, values bound, results run on SQLite
and PostgreSQL; the injection corpus thrown at every name it takes."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit import InvalidQueryError, QueryBuilder, QueryInputError

from .models import EPOCH, Base, Canary, Comment, Post, User
from .payloads import NON_STRING, PAYLOADS


@pytest.fixture
def seeded(sql_session: Session) -> Session:
    sql_session.add(Canary(id=1, secret="still here"))
    for n in range(3):
        user = User(email=f"u{n}@example.com", name=f"u{n}", score=n * 10, age=20 + n)
        user.posts = [
            Post(title=f"{n}.{p}", comments=[Comment(body="x")] * 0) for p in range(n + 1)
        ]
        sql_session.add(user)
    sql_session.flush()
    return sql_session


def rows(session: Session, builder: QueryBuilder) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in session.execute(builder.build()).all()]


def test_selects_filters_and_orders_by_checked_names(seeded: Session) -> None:
    dialect = seeded.get_bind().dialect.name
    query = (
        QueryBuilder(User, dialect=dialect)
        .select("name", "score")
        .where("score", ">=", 10)
        .where("name", "like", "u%")
        .order_by("score", "desc")
        .limit(5)
    )
    assert rows(seeded, query) == [("u2", 20), ("u1", 10)]


def test_joins_follow_relationships_and_aggregate_with_group_by_and_having(seeded: Session) -> None:
    query = (
        QueryBuilder(User)
        .join("posts")
        .select("name", "count(posts.id)", "max(posts.title)")
        .group_by("name")
        .having("count(posts.id)", ">", 1)
        .order_by("name")
    )
    assert rows(seeded, query) == [("u1", 2, "1.1"), ("u2", 3, "2.2")]


def test_left_join_keeps_rows_without_a_match(seeded: Session) -> None:
    query = (
        QueryBuilder(Post)
        .left_join("comments")
        .select("title", "count(comments.id)")
        .group_by("title")
        .order_by("title")
        .limit(2)
        .offset(1)
    )
    assert rows(seeded, query) == [("1.0", 0), ("1.1", 0)]


def test_core_tables_join_on_their_foreign_keys(seeded: Session) -> None:
    users = Base.metadata.tables["users"]
    query = (
        QueryBuilder(users)
        .join("posts")
        .select("name", "posts.title")
        .where("posts.title", "=", "2.1")
    )
    assert rows(seeded, query) == [("u2", "2.1")]


def test_values_are_bound_and_shown_as_placeholders() -> None:
    sql = QueryBuilder(User).select("id").where("name", "=", "x' OR '1'='1").to_sql()
    assert "x' OR" not in sql
    assert "%(name_1)s" in sql
    assert "users.name = ?" in QueryBuilder(User).where("name", "=", "x").to_sql("sqlite")


def test_the_builder_is_immutable() -> None:
    base = QueryBuilder(User).select("id")
    base.where("age", "is null").limit(1)
    assert "WHERE" not in base.to_sql()


def test_plain_columns_next_to_aggregates_must_be_grouped() -> None:
    with pytest.raises(InvalidQueryError, match="grouped"):
        QueryBuilder(User).select("name", "count(*)").build()


def test_aggregates_must_suit_the_column_type() -> None:
    with pytest.raises(InvalidQueryError):
        QueryBuilder(User).select("sum(name)")
    with pytest.raises(InvalidQueryError):
        QueryBuilder(User).select("avg(*)")


def test_where_values_are_coerced_to_the_column_type() -> None:
    with pytest.raises(InvalidQueryError):
        QueryBuilder(User).where("age", ">", "ten")
    QueryBuilder(User).where("created_at", "<", (EPOCH + dt.timedelta(days=1)).isoformat())


@pytest.mark.parametrize(
    ("column", "op", "value"),
    [
        ("age", "contains", 5),  # a text operator on a number: a raw TypeError
        ("age", "like", 5),
        ("created_at", "startswith", "2024"),
        ("is_active", "<", True),  # an order on a boolean: SQLAlchemy's raw ArgumentError
        ("is_active", "between", [False, True]),
        ("status", "<", "active"),  # an enum's order: its declaration's on PostgreSQL, its
        ("status", "like", "act%"),  # text's on SQLite
    ],
)
def test_an_operator_the_column_kind_has_not_is_refused_as_by_the_repositories(
    column: str, op: str, value: Any
) -> None:
    with pytest.raises(InvalidQueryError, match="does not apply") as raised:
        QueryBuilder(User).where(column, op, value)
    assert raised.value.name == op
    assert "eq" in raised.value.allowed
    with pytest.raises(InvalidQueryError, match="does not apply"):
        QueryBuilder(User).select("count(*)").having("count(*)", "like", "1")


def test_unknown_names_raise_with_the_allowed_ones() -> None:
    with pytest.raises(InvalidQueryError) as caught:
        QueryBuilder(User).select("password")
    assert "email" in caught.value.allowed
    with pytest.raises(InvalidQueryError) as caught:
        QueryBuilder(User).join("friends")
    assert "posts" in caught.value.allowed
    with pytest.raises(InvalidQueryError):
        QueryBuilder(User).select("posts.title")  # not joined
    with pytest.raises(InvalidQueryError):
        QueryBuilder(User).join("posts").join("posts")
    with pytest.raises(InvalidQueryError):
        QueryBuilder("users")


BUILDER_INPUTS: list[Callable[[Any], Any]] = [
    lambda p: QueryBuilder(User).select(p),
    lambda p: QueryBuilder(User).join(p),
    lambda p: QueryBuilder(User).left_join(p),
    lambda p: QueryBuilder(User).where(p, "=", 1),
    lambda p: QueryBuilder(User).where("name", p, "x"),
    lambda p: QueryBuilder(User).group_by(p),
    lambda p: QueryBuilder(User).having(p, ">", 1),
    lambda p: QueryBuilder(User).having("count(id)", p, 1),
    lambda p: QueryBuilder(User).order_by(p),
    lambda p: QueryBuilder(User).order_by("name", p),
    lambda p: QueryBuilder(User).limit(p),
    lambda p: QueryBuilder(User).offset(p),
    lambda p: QueryBuilder(User, dialect=p),
]


def test_payloads_as_builder_names_operators_directions_and_limits_are_refused() -> None:
    accepted = []
    for payload in [*PAYLOADS, *NON_STRING]:
        if payload is None:
            continue  # the default for dialect=
        for index, call in enumerate(BUILDER_INPUTS):
            try:
                call(payload)
            except InvalidQueryError:
                continue
            accepted.append((index, payload))
    assert accepted == []


def test_payloads_as_builder_values_are_only_data(seeded: Session) -> None:
    dialect = seeded.get_bind().dialect.name
    # the queries below only read: the users are read once (not again for each of the ~1,000
    # payload and operator pairs, which doubled the test's round trips); a query that changed
    # them would differ from this answer, and the canary is read again at the end
    users = [(u.id, u.name) for u in seeded.scalars(sa.select(User))]
    for payload in PAYLOADS:
        if "\x00" in payload:
            with pytest.raises(InvalidQueryError):
                QueryBuilder(User).where("name", "=", payload)
            continue
        for op in ("=", "!=", "like", "contains", ">"):
            try:
                query = QueryBuilder(User, dialect=dialect).select("id").where("name", op, payload)
            except QueryInputError:
                # a pattern ending in the escape character, or text over the length cap
                assert op == "like" or len(payload) > 1000  # the default max_input_length
                continue
            found = {r.id for r in seeded.execute(query.build())}
            expected = {id_ for id_, name in users if _holds(name, op, payload)}
            assert found == expected
    assert seeded.execute(sa.select(Canary.secret)).scalar_one() == "still here"
    assert rows(seeded, QueryBuilder(User).select("id").where("name", "=", "' OR 1=1 --")) == []


def _holds(name: str, op: str, value: str) -> bool:
    if op == "=":
        return name == value
    if op == "!=":
        return name != value
    if op == ">":
        return name > value
    if op == "contains":
        return value in name
    return _like(name, value)


def _like(name: str, pattern: str) -> bool:
    regex = ""
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            regex += re.escape(next(chars))
        else:
            regex += {"%": ".*", "_": "."}.get(char, re.escape(char))
    return re.fullmatch(regex, name, re.DOTALL) is not None
