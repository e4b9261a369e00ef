"""Injection: a corpus of more than 200 payloads, and Hypothesis' arbitrary strings, thrown at
every input a repository takes, and statements that hide a second one at ``db.sql``. Values
must behave as data (the in-memory repository, which runs no SQL, gives the expected answer),
names must be refused with typed errors, and nothing may execute: the canary row survives and,
on PostgreSQL, a 2-second statement_timeout turns any pg_sleep(5) that ran into a failure."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from dalkit import (
    DalkitError,
    Database,
    InMemoryRepository,
    InvalidCursorError,
    InvalidFilterError,
    InvalidQueryError,
    InvalidSortError,
    QueryInputError,
    Repository,
)
from dalkit.query.cursor import SECRET_KEY_INFO, CursorCodec

from .models import EPOCH, Canary, Status, User
from .payloads import NON_STRING, PAYLOADS, RAW_SQL_HARMLESS, RAW_SQL_REFUSED

# the payload loops run one statement shape hundreds of times in a transaction on purpose
pytestmark = pytest.mark.filterwarnings("ignore::dalkit.NPlusOneWarning")

#: what Database(secret_key=...) would put in session.info
SECRET = "the injection suite's cursor secret"

NAMES = ["O'Brien", "50% off", "under_score", "back\\slash", "semi;colon", "ünïcödé", "Zed", "zed"]


class UserRepository(Repository[User]):
    filterable = (
        "id",
        "email",
        "name",
        "age",
        "score",
        "is_active",
        "status",
        "balance",
        "created_at",
    )
    sortable = ("id", "name", "age", "score", "created_at", "email")
    searchable = ("name", "email")


class KeyedUserRepository(UserRepository):
    cursor_secret = SECRET


def _users() -> list[User]:
    return [
        User(
            id=i + 1,
            name=name,
            email=f"{name.lower()}{i}@example.com",
            age=None if i % 3 == 0 else 20 + i,
            score=i % 4,
            is_active=i % 2 == 0,
            status=Status.active,
            balance=Decimal(i),
            created_at=EPOCH + dt.timedelta(hours=i),
        )
        for i, name in enumerate(NAMES)
    ]


class Attack:
    """The same users in SQL and in memory, and a way to compare their answers."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sql = UserRepository(session)
        # the fake is given the secret the database configured, so cursors cross between them
        self.memory = InMemoryRepository.mirroring(KeyedUserRepository)(_users())
        self.sql.add_many(_users())

    def agree(self, call: Callable[..., Any]) -> None:
        """Both repositories give the same rows, or both refuse with the same typed error."""
        outcomes = []
        for repo in (self.sql, self.memory):
            try:
                outcomes.append(_ids(call(repo)))
            except QueryInputError as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]

    def refuses(self, error: type[QueryInputError], call: Callable[..., Any]) -> None:
        for repo in (self.sql, self.memory):
            with pytest.raises(error):
                call(repo)


def _ids(result: Any) -> Any:
    items = getattr(result, "items", result)
    if isinstance(items, list):
        return [u.id for u in items]
    return result


@pytest.fixture
def attack(sql_session: Session) -> Iterator[Attack]:
    if sql_session.get_bind().dialect.name == "postgresql":
        sql_session.execute(sa.text("SET LOCAL statement_timeout = '2s'"))
    sql_session.info[SECRET_KEY_INFO] = SECRET
    sql_session.add(Canary(id=1, secret="still here"))
    yield Attack(sql_session)
    survivors = sql_session.execute(sa.select(Canary.secret)).scalars().all()
    assert survivors == ["still here"]


VALUE_KEYS = [
    "name",
    "name__ne",
    "name__contains",
    "name__startswith",
    "name__like",
    "name__ilike",
    "email__lt",
    "age",
    "created_at__gte",
    "status",
    "balance",
    "is_active",
]


def test_payloads_as_filter_values_are_only_data(attack: Attack) -> None:
    for payload in [*PAYLOADS, *NON_STRING]:
        for key in VALUE_KEYS:
            attack.agree(lambda repo, k=key, p=payload: repo.find(**{k: p}))
        attack.agree(lambda repo, p=payload: repo.find(name__in=[p, "Zed"]))
        attack.agree(lambda repo, p=payload: repo.find(id__not_in=[p]))


def test_a_tautology_as_a_value_matches_no_row(attack: Attack) -> None:
    for payload in ("' OR 1=1 --", "' OR '1'='1", "1 OR 1=1", '" OR ""="'):
        assert attack.sql.find(name=payload) == []
        assert attack.sql.find(email__like=payload) == []
        assert attack.sql.count(name__contains=payload) == 0


def test_payloads_as_filter_keys_and_operators_are_refused(attack: Attack) -> None:
    for payload in PAYLOADS:
        for key in (payload, f"name__{payload}", f"{payload}__eq", f"{payload}__{payload}"):
            if key in VALUE_KEYS:
                continue
            attack.refuses(InvalidFilterError, lambda repo, k=key: repo.find(**{k: "x"}))


def test_payloads_as_sort_orders_are_refused(attack: Attack) -> None:
    sortable = set(UserRepository.sortable)
    for payload in PAYLOADS:
        calls: list[Callable[..., Any]] = [
            lambda repo, p=payload: repo.list(order_by=p),
            lambda repo, p=payload: repo.list(order_by=[(p, "asc")]),
            lambda repo, p=payload: repo.paginate(sort=p),
            lambda repo, p=payload: repo.paginate_cursor(sort=p),
        ]
        if payload.strip().lstrip("+-") in sortable:
            for call in calls:  # a padded real name still means that column
                attack.agree(call)
            continue
        for call in calls:
            attack.refuses(InvalidSortError, call)
        attack.refuses(InvalidSortError, lambda repo, p=payload: repo.list(order_by=[("name", p)]))


def test_payloads_as_search_text_are_only_data(attack: Attack) -> None:
    for payload in PAYLOADS:
        attack.agree(lambda repo, p=payload: repo.search(p))
        attack.agree(lambda repo, p=payload: repo.search(p, fields=["email"]))
        attack.refuses(InvalidFilterError, lambda repo, p=payload: repo.search("a", fields=[p]))


def test_payloads_as_cursors_are_refused(attack: Attack) -> None:
    for payload in [*PAYLOADS, *NON_STRING]:
        if payload is None:
            continue
        attack.refuses(InvalidCursorError, lambda repo, p=payload: repo.paginate_cursor(after=p))
        attack.refuses(InvalidCursorError, lambda repo, p=payload: repo.paginate_cursor(before=p))


def test_payloads_as_page_numbers_and_sizes_are_refused(attack: Attack) -> None:
    for payload in [*PAYLOADS, *NON_STRING]:
        if payload is None or (
            isinstance(payload, str) and payload.strip().isascii() and payload.strip().isdigit()
        ):
            continue  # "1" is a fine page number
        attack.refuses(QueryInputError, lambda repo, p=payload: repo.paginate(page=p))
        attack.refuses(QueryInputError, lambda repo, p=payload: repo.paginate(per_page=p))
        attack.refuses(QueryInputError, lambda repo, p=payload: repo.list(limit=p))


def test_a_cursor_signed_with_another_key_is_refused(attack: Attack) -> None:
    keys = attack.sql._q.sort_keys("name")
    target = attack.sql.list(order_by="name")[2]
    forged = CursorCodec("users", secret=b"an attacker's own secret!").encode(keys, target)
    attack.refuses(InvalidCursorError, lambda repo: repo.paginate_cursor(sort="name", after=forged))
    other_table = CursorCodec("posts", SECRET).encode(keys, target)  # the same key, another scope
    attack.refuses(
        InvalidCursorError, lambda repo: repo.paginate_cursor(sort="name", after=other_table)
    )
    genuine = attack.sql.paginate_cursor(limit=2, sort="name").next_cursor
    attack.agree(lambda repo: repo.paginate_cursor(limit=2, sort="name", after=genuine))


def test_a_cursor_with_a_secret_is_portable_between_repositories(attack: Attack) -> None:
    class Signed(UserRepository):
        cursor_secret = "a shared secret of enough length"

    first = Signed(attack.session).paginate_cursor(limit=3, sort="email")
    again = Signed(attack.session).paginate_cursor(limit=3, sort="email", after=first.next_cursor)
    assert [u.id for u in first.items + again.items] == [
        u.id for u in attack.sql.list(order_by="email")
    ][:6]
    with pytest.raises(InvalidCursorError):
        attack.sql.paginate_cursor(limit=3, sort="email", after=first.next_cursor)


# --- db.sql ----------------------------------------------------------------------------------


@pytest.fixture
def raw(database: Database) -> Iterator[Database]:
    """A database with the canary row, checked after the test."""
    database.sql("INSERT INTO canary (id, secret) VALUES (1, :secret)", secret="still here")
    yield database
    assert [dict(r) for r in database.sql("SELECT id, secret FROM canary")] == [
        {"id": 1, "secret": "still here"}
    ]


def test_raw_sql_hiding_a_second_statement_or_a_value_is_refused(raw: Database) -> None:
    for statement in RAW_SQL_REFUSED:
        with pytest.raises(InvalidQueryError):
            raw.sql(statement)


def test_raw_sql_with_lookalike_separators_runs_as_one_statement_or_fails(raw: Database) -> None:
    for statement in RAW_SQL_HARMLESS:
        # a syntax error, translated, is fine: what matters is that nothing else ran
        with contextlib.suppress(DalkitError):
            raw.sql(statement)


def test_payloads_as_raw_sql_values_are_only_data(raw: Database) -> None:
    for payload in PAYLOADS:
        if "\x00" in payload:
            continue  # PostgreSQL text cannot hold NUL at all
        rows = raw.sql(
            "SELECT secret, :value AS v FROM canary WHERE secret <> :value", value=payload
        )
        assert [(r["secret"], r["v"]) for r in rows] == [("still here", payload)]


# --- Hypothesis ------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(value=st.text(max_size=24), key=st.sampled_from(VALUE_KEYS[:7]))
def test_any_text_as_a_filter_value_gives_the_in_memory_answer(
    attack: Attack, value: str, key: str
) -> None:
    attack.agree(lambda repo: repo.find(**{key: value}))


@PROPERTY
@given(text=st.text(max_size=24))
def test_any_text_as_search_text_gives_the_in_memory_answer(attack: Attack, text: str) -> None:
    attack.agree(lambda repo: repo.search(text))


@PROPERTY
@given(key=st.text(max_size=24))
def test_any_text_as_a_filter_key_is_refused_unless_it_names_a_filter(
    attack: Attack, key: str
) -> None:
    name, _, op = key.rpartition("__") if "__" in key else (key, "", "eq")
    if name in UserRepository.filterable and op in ("eq", "ne", "lt", "lte", "gt", "gte"):
        return  # a real filter: covered by the value properties
    attack.refuses(InvalidFilterError, lambda repo: repo.find(**{key: "1"}))


@PROPERTY
@given(order=st.text(max_size=24))
def test_any_text_as_a_sort_order_is_refused_unless_it_names_sortable_fields(
    attack: Attack, order: str
) -> None:
    parts = [p.strip().lstrip("+-") for p in order.split(",")]
    if order.strip() and all(p in UserRepository.sortable for p in parts):
        attack.agree(lambda repo: repo.list(order_by=order))
        return
    if not order.strip():
        return  # an empty order is the default order
    attack.refuses(InvalidSortError, lambda repo: repo.list(order_by=order))


@PROPERTY
@given(cursor=st.one_of(st.text(max_size=200), st.binary(max_size=64).map(lambda b: b.hex() + ".")))
def test_any_text_as_a_cursor_is_refused(attack: Attack, cursor: str) -> None:
    attack.refuses(InvalidCursorError, lambda repo: repo.paginate_cursor(after=cursor))


@PROPERTY
@given(
    tail=st.text(min_size=1, max_size=40).filter(lambda t: t[0] not in "-/" and not t[0].isspace())
)
def test_any_text_after_a_statement_and_a_semicolon_is_refused(raw: Database, tail: str) -> None:
    with pytest.raises(InvalidQueryError):
        raw.sql(f"SELECT 1 AS v; {tail}")
