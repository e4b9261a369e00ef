"""Keyset cursors: encrypted (nothing readable inside), keyed from configuration, and able to
continue after a row whose sort value is infinite."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import math
import uuid
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncRepository, ConfigurationError, InvalidCursorError, Repository
from dalkit.query.cursor import SECRET_KEY_ENV, SECRET_KEY_INFO, CursorCodec, secret_key
from dalkit.query.fields import column_field
from dalkit.query.sorting import SortKey

from .conftest import SECRET
from .models import Account, Reading

VALUES = [1.5, math.inf, -math.inf, 2.0, -0.5]


class Readings(Repository[Reading]):
    cursor_secret = SECRET


class AsyncReadings(AsyncRepository[Reading]):
    cursor_secret = SECRET


class Accounts(Repository[Account]):
    sortable = ("email", "id")
    cursor_secret = SECRET


class UnkeyedAccounts(Repository[Account]):
    sortable = ("email", "id")


def _walk(repo: Readings, sort: str) -> list[float]:
    seen: list[float] = []
    page = repo.paginate_cursor(limit=1, sort=sort)
    while True:
        seen.extend(r.value for r in page.items)
        if page.next_cursor is None:
            return seen
        page = repo.paginate_cursor(limit=1, sort=sort, after=page.next_cursor)


@pytest.mark.parametrize("sort", ["value", "-value"])
def test_a_cursor_after_an_infinite_sort_value_leads_on(session: Session, sort: str) -> None:
    repo = Readings(session)
    repo.add_many([Reading(id=i, value=v) for i, v in enumerate(VALUES, 1)])
    assert _walk(repo, sort) == sorted(VALUES, reverse=sort.startswith("-"))


async def test_an_async_cursor_after_an_infinite_sort_value_leads_on(
    async_session: AsyncSession,
) -> None:
    repo = AsyncReadings(async_session)
    await repo.add_many([Reading(id=i, value=v) for i, v in enumerate(VALUES, 1)])
    page = await repo.paginate_cursor(limit=1, sort="-value")
    assert [r.value for r in page.items] == [math.inf]
    after = await repo.paginate_cursor(limit=1, sort="-value", after=page.next_cursor)
    assert [r.value for r in after.items] == [2.0]
    back = await repo.paginate_cursor(limit=1, sort="-value", before=after.prev_cursor)
    assert [r.value for r in back.items] == [math.inf]


def test_a_cursor_reveals_no_sort_value(session: Session) -> None:
    repo = Accounts(session)
    repo.add_many(
        [Account(id=i, email=f"person{i}@example.com", password_hash="x") for i in range(1, 4)]
    )
    cursor = repo.paginate_cursor(limit=1, sort="email").next_cursor
    assert cursor is not None
    raw = b"".join(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in cursor.split(".")
    )
    for clear in (b"person1", b"example", b"email"):
        assert clear not in raw
    assert [a.id for a in repo.paginate_cursor(limit=5, sort="email", after=cursor).items] == [2, 3]


def test_cursor_pagination_without_a_secret_says_how_to_set_one(session: Session) -> None:
    del session.info[SECRET_KEY_INFO]  # a Database made without secret_key
    repo = UnkeyedAccounts(session)
    repo.add_many([Account(id=i, email=f"p{i}@x", password_hash="x") for i in range(1, 4)])
    with pytest.raises(ConfigurationError, match=SECRET_KEY_ENV) as caught:
        repo.paginate_cursor(limit=1, sort="email")
    assert "secret_key=" in str(caught.value)
    with pytest.raises(ConfigurationError, match=SECRET_KEY_ENV):
        repo.paginate_cursor(limit=10, sort="email")  # even when one page holds every row


def test_the_configured_secret_keys_the_cursors_of_every_repository(session: Session) -> None:
    repo = UnkeyedAccounts(session)
    repo.add_many([Account(id=i, email=f"p{i}@x", password_hash="x") for i in range(1, 4)])
    first = repo.paginate_cursor(limit=2, sort="email")
    again = UnkeyedAccounts(session).paginate_cursor(limit=2, sort="email", after=first.next_cursor)
    assert [a.id for a in first.items + again.items] == [1, 2, 3]
    session.info[SECRET_KEY_INFO] = "a different secret, long enough"
    with pytest.raises(InvalidCursorError):
        repo.paginate_cursor(limit=2, sort="email", after=first.next_cursor)


def test_the_secret_comes_from_the_session_the_database_configured(session: Session) -> None:
    assert secret_key(session) == SECRET.encode()
    assert secret_key(session, "a repository's own secret") == b"a repository's own secret"
    del session.info[SECRET_KEY_INFO]
    with pytest.raises(ConfigurationError, match=SECRET_KEY_ENV):
        secret_key(session)
    with pytest.raises(ConfigurationError, match=SECRET_KEY_ENV):
        secret_key(None)
    session.info[SECRET_KEY_INFO] = "short-hunter2"
    with pytest.raises(ConfigurationError) as caught:
        secret_key(session)
    assert "hunter2" not in str(caught.value)


async def test_the_secret_comes_from_an_async_session_too(async_session: AsyncSession) -> None:
    assert secret_key(async_session) == SECRET.encode()


class Colour(enum.Enum):
    red = "r"
    blue = "b"


COLUMNS = {
    "n": (sa.Column("n", sa.Integer, nullable=False), 7),
    "f": (sa.Column("f", sa.Float, nullable=False), -math.inf),
    "d": (sa.Column("d", sa.Numeric(10, 2), nullable=False), decimal.Decimal("12.50")),
    "s": (sa.Column("s", sa.String(20), nullable=False), "zoë:\"'"),
    "ts": (
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ),
    "day": (sa.Column("day", sa.Date, nullable=False), dt.date(2024, 2, 29)),
    "at": (sa.Column("at", sa.Time, nullable=False), dt.time(23, 59, 59, 999)),
    "u": (sa.Column("u", sa.Uuid, nullable=False), uuid.UUID(int=42)),
    "c": (sa.Column("c", sa.Enum(Colour), nullable=False), Colour.blue),
    "b": (sa.Column("b", sa.Boolean, nullable=False), False),
}


def test_every_kind_of_sort_value_round_trips() -> None:
    keys = [SortKey(column_field(column, name)) for name, (column, _) in COLUMNS.items()]
    row = SimpleNamespace(**{name: value for name, (_, value) in COLUMNS.items()})
    codec = CursorCodec("things", SECRET)
    assert codec.decode(codec.encode(keys, row), keys) == tuple(v for _, v in COLUMNS.values())


def test_a_cursor_opens_only_with_its_key_scope_and_order() -> None:
    column = sa.Column("n", sa.Integer, nullable=False)
    keys = [SortKey(column_field(column))]
    cursor = CursorCodec("things", SECRET).encode(keys, SimpleNamespace(n=3))
    head, body = cursor.split(".")
    tampered = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}"
    for codec, order, text in [
        (CursorCodec("things", "another secret of enough length"), keys, cursor),
        (CursorCodec("others", SECRET), keys, cursor),
        (CursorCodec("things", SECRET), [SortKey(keys[0].field, descending=True)], cursor),
        (CursorCodec("things", SECRET), keys, tampered),
        (CursorCodec("things", SECRET), keys, head),
        (CursorCodec("things", SECRET), keys, "x" * 5000),
    ]:
        with pytest.raises(InvalidCursorError):
            codec.decode(text, order)
    with pytest.raises(ConfigurationError, match=SECRET_KEY_ENV):
        CursorCodec("things").encode(keys, SimpleNamespace(n=3))
    assert CursorCodec("things").with_secret(SECRET).decode(cursor, keys) == (3,)


def test_a_cursor_has_one_spelling_in_url_safe_base64() -> None:
    column = sa.Column("n", sa.Integer, nullable=False)
    keys = [SortKey(column_field(column))]
    codec = CursorCodec("things", SECRET)
    # a cursor whose text has "-" or "_", the characters the standard alphabet spells "+", "/"
    cursor = next(
        text
        for text in (codec.encode(keys, SimpleNamespace(n=3)) for _ in range(1000))
        if "-" in text or "_" in text
    )
    head, body = cursor.split(".")
    assert codec.decode(cursor, keys) == (3,)
    for text in [
        cursor.replace("-", "+").replace("_", "/"),  # the standard alphabet
        f"{head}.{body[:4]} {body[4:]}",  # a character outside the alphabet, not skipped
        f"{head}.{body[:4]}\u00e9{body[5:]}",  # not ASCII
        f"{head}.{body[:-1]}",  # a character short
        f"{head}.",
        f".{body}",
    ]:
        with pytest.raises(InvalidCursorError):
            codec.decode(text, keys)


def test_a_cursor_after_a_nan_numeric_leads_on() -> None:
    # PostgreSQL (and the in-memory repository) order a NaN numeric above every number, so a
    # descending walk starts there: the cursor after that row was refused as invalid
    keys = [SortKey(column_field(sa.Column("d", sa.Numeric(10, 2), nullable=False)))]
    codec = CursorCodec("things", SECRET)
    cursor = codec.encode(keys, SimpleNamespace(d=decimal.Decimal("NaN")))
    (value,) = codec.decode(cursor, keys)
    assert value.is_nan()
