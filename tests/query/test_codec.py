"""The one JSON codec is a true inverse: outbox events with UUIDs, Decimals, Enums, zoned
dates and times, bytes and nested dataclasses come back equal, through standard JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import uuid
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalkit._codec import CodecError, dumps, jsonable, loads, restore
from dalkit.errors import OutboxError
from dalkit.outbox.events import DomainEvent
from dalkit.outbox.messages import EventTypeRegistry, OutboxMessage


class Colour(enum.Enum):
    red = "r"
    blue = "b"


class Size(enum.IntEnum):
    small = 1
    large = 2


@dataclasses.dataclass(frozen=True)
class Money:
    amount: decimal.Decimal
    currency: str


@dataclasses.dataclass(frozen=True)
class Line:
    sku: uuid.UUID
    quantity: int
    price: Money
    size: Size | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderPlaced(DomainEvent):
    order_id: uuid.UUID
    total: Money
    lines: tuple[Line, ...]
    colour: Colour
    placed_at: dt.datetime
    placed_local: dt.datetime
    ship_on: dt.date | None
    cutoff: dt.time
    signature: bytes
    weight: float
    tags: list[str]
    taxes: dict[str, decimal.Decimal]
    note: str | None = None


TYPES = EventTypeRegistry()
TYPES.register(OrderPlaced, "order.placed", 2)

offsets = st.builds(
    dt.timezone, st.timedeltas(min_value=-dt.timedelta(hours=23), max_value=dt.timedelta(hours=23))
)
decimals = st.decimals(allow_nan=False)
money = st.builds(Money, amount=decimals, currency=st.text(max_size=3))
lines = st.builds(
    Line,
    sku=st.uuids(),
    quantity=st.integers(),
    price=money,
    size=st.none() | st.sampled_from(Size),
)
events = st.builds(
    OrderPlaced,
    event_id=st.uuids().map(str),
    occurred_at=st.datetimes(timezones=st.just(dt.UTC)),
    order_id=st.uuids(),
    total=money,
    lines=st.lists(lines, max_size=3).map(tuple),
    colour=st.sampled_from(Colour),
    placed_at=st.datetimes(timezones=offsets),
    placed_local=st.datetimes(timezones=st.timezones()),
    ship_on=st.none() | st.dates(),
    cutoff=st.times(timezones=st.none() | offsets),
    signature=st.binary(max_size=32),
    weight=st.floats(allow_nan=False),
    tags=st.lists(st.text(max_size=8), max_size=3),
    taxes=st.dictionaries(st.text(max_size=5), decimals, max_size=3),
    note=st.none() | st.text(max_size=20),
)


def _through_the_outbox(event: OrderPlaced) -> DomainEvent:
    name, version, payload = TYPES.dump(event)
    stored = json.loads(json.dumps(payload, allow_nan=False))  # what a JSON column keeps
    message = OutboxMessage(
        id=1,
        event_id=event.event_id,
        event_type=name,
        event_version=version,
        aggregate_type=None,
        aggregate_id=None,
        aggregate_key=f"event:{event.event_id}",
        payload=stored,
        occurred_at=event.occurred_at,
    )
    return TYPES.load(message)


@settings(max_examples=200, deadline=None)
@given(event=events)
def test_load_of_dump_is_the_event(event: OrderPlaced) -> None:
    assert _through_the_outbox(event) == event


def test_zoned_times_keep_their_zone_and_fold() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    for fold in (0, 1):  # 02:30 happens twice on 2024-10-27 in Paris
        value = dt.datetime(2024, 10, 27, 2, 30, tzinfo=paris, fold=fold)
        back = restore(jsonable(value), dt.datetime)
        assert back.tzinfo is paris
        assert back.fold == fold
        assert back.utcoffset() == value.utcoffset()
    assert jsonable(dt.datetime(2024, 3, 31, 3, 30, tzinfo=paris)).endswith("+02:00[Europe/Paris]")


def test_non_finite_floats_are_standard_json() -> None:
    assert dumps([math.inf, -math.inf]) == '["inf","-inf"]'
    assert loads(dumps(math.inf), float) == math.inf
    assert math.isnan(loads(dumps(math.nan), float))


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ("not-a-uuid", uuid.UUID),
        ("1.2.3", decimal.Decimal),
        ("green", Colour),
        ("!!", bytes),
        (1, str),
        ("1", int),
        ({"amount": "1"}, Money),
        ({"amount": "1", "currency": "EUR", "extra": 1}, Money),
        ("2024-01-01T00:00:00+01:00[Nowhere/Atlantis]", dt.datetime),
        ([1, 2], tuple[int]),
    ],
)
def test_json_that_is_not_the_type_asked_for_is_a_codec_error(data: object, hint: object) -> None:
    with pytest.raises(CodecError):
        restore(data, hint)


def test_a_message_that_does_not_fit_its_event_type_is_an_outbox_error() -> None:
    event = OrderPlaced(
        order_id=uuid.uuid4(),
        total=Money(decimal.Decimal("1.50"), "EUR"),
        lines=(),
        colour=Colour.red,
        placed_at=dt.datetime.now(dt.UTC),
        placed_local=dt.datetime.now(dt.UTC),
        ship_on=None,
        cutoff=dt.time(12),
        signature=b"\x00\xff",
        weight=1.0,
        tags=[],
        taxes={},
    )
    name, version, payload = TYPES.dump(event)
    payload["order_id"] = "not a uuid"
    message = OutboxMessage(
        1, event.event_id, name, version, None, None, "k", payload, event.occurred_at
    )
    with pytest.raises(OutboxError, match="order_id"):
        TYPES.load(message)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ({Colour.red: 1}, dict[Colour, int]),
        ({Size.large: "l"}, dict[Size, str]),
        ({0.5: 1, math.inf: 2}, dict[float, int]),
        ({True: 1, False: 0}, dict[bool, int]),
        ({7: 1}, dict[int, int]),
        ({uuid.UUID(int=7): 1}, dict[uuid.UUID, int]),
        ({dt.date(2024, 2, 29): 1}, dict[dt.date, int]),
        ({decimal.Decimal("1.10"): 1}, dict[decimal.Decimal, int]),
        ({"7": 1}, dict[str, int]),
    ],
)
def test_mapping_keys_come_back_as_their_type(value: object, hint: object) -> None:
    assert loads(dumps(value), hint) == value


def test_a_mapping_key_json_cannot_carry_is_refused_by_the_outbox() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Routed(DomainEvent):
        legs: dict[tuple[str, str], int]

    types = EventTypeRegistry()
    types.register(Routed, "routed")
    with pytest.raises(OutboxError, match=r"Routed\.legs .*tuple mapping key"):
        types.dump(Routed(legs={("AMS", "CDG"): 1}))


def test_bare_containers_come_back_with_what_json_carries() -> None:
    value = {"meta": {"a": [1, "x"]}, "tags": ["x"], "pair": [1, "y"], "seen": ["a"]}
    assert restore(value["meta"], dict) == {"a": [1, "x"]}
    assert restore(value["tags"], list) == ["x"]
    assert restore(value["pair"], tuple) == (1, "y")
    assert restore(value["seen"], frozenset) == frozenset({"a"})


@pytest.mark.parametrize(
    "hint",
    [uuid.UUID, decimal.Decimal, dt.date, dt.datetime, Colour, bytes, int, tuple[int, ...]],
)
def test_a_value_that_does_not_read_back_is_never_shown_in_the_error(hint: object) -> None:
    # an event class retyped without a new version: the error reaches the relay's log, the
    # outbox's last_error and `dalkit outbox status`
    secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc[Europe/Nowhere]"
    with pytest.raises(CodecError) as caught:
        restore(secret, hint)
    assert "sk_live" not in str(caught.value)
    with pytest.raises(CodecError) as caught:
        restore({secret: 1}, dict[int, int])
    assert "sk_live" not in str(caught.value)
