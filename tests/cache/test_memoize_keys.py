"""What keys a memoized call: the function (module and qualified name, or its ``name``) and its
arguments' values, bound to its signature and the same in every process; an argument with no
value but its address is refused (sync and async; SQLite and PostgreSQL; memory and Redis)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, QueryCache, UncacheableCallError
from dalkit.cache.call_keys import CallKeys


def _function_in_module(module: str, source: str) -> Callable[..., Any]:
    """``summary`` defined at the top of a module named ``module``, as two files would."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(source, f"{module.replace('.', '/')}.py", "exec"), namespace)
    fn: Callable[..., Any] = namespace["summary"]
    return fn


def test_functions_of_one_name_in_two_modules_keep_their_own_results(
    db: Database, cache: QueryCache
) -> None:
    billing = cache.memoize(tables=["cache_book"])(
        _function_in_module("shop.billing", "def summary(n):\n    return f'invoices {n}'\n")
    )
    reports = cache.memoize(tables=["cache_book"])(
        _function_in_module("shop.reports", "def summary(n):\n    return f'books {n}'\n")
    )
    assert billing.__qualname__ == reports.__qualname__ == "summary"
    assert [billing(1), reports(1), billing(1), reports(1)] == [
        "invoices 1",
        "books 1",
        "invoices 1",
        "books 1",
    ]
    assert cache.get_stats()["hits"] == 2


def test_a_call_is_one_call_however_its_arguments_are_passed(
    db: Database, cache: QueryCache
) -> None:
    runs: list[tuple[int, bool]] = []

    @cache.memoize(tables=["cache_book"])
    def titles(limit: int, *, newest: bool = False) -> list[str]:
        runs.append((limit, newest))
        return [row.title for row in db.sql("SELECT title FROM cache_book ORDER BY id")][:limit]

    assert titles(1) == titles(limit=1) == titles(1, newest=False) == ["a"]
    assert titles(2, newest=True) == ["a", "b"]
    assert runs == [(1, False), (2, True)]


def test_a_factory_gives_each_function_a_name_of_its_own(db: Database, cache: QueryCache) -> None:
    def counter(table: str) -> Callable[[], int]:
        @cache.memoize(tables=["cache_book", "cache_author"], name=f"count:{table}")
        def count() -> int:
            return len(db.sql(f"SELECT 1 FROM {table}"))

        return count

    books, authors = counter("cache_book"), counter("cache_author")
    assert books.__qualname__ == authors.__qualname__
    assert [books(), authors(), books(), authors()] == [2, 1, 2, 1]


def test_functions_a_factory_made_keep_their_own_results_without_a_name(
    db: Database, cache: QueryCache
) -> None:
    runs: list[str] = []

    def counter(table: str) -> Callable[[], int]:
        @cache.memoize(tables=["cache_book", "cache_author"])
        def count() -> int:
            runs.append(table)  # captured state (the list) keys nothing: it changes
            return len(db.sql(f"SELECT 1 FROM {table}"))

        return count

    books, authors, books_again = (
        counter("cache_book"),
        counter("cache_author"),
        counter("cache_book"),
    )
    assert books.__qualname__ == authors.__qualname__
    assert [books(), authors(), books(), authors(), books_again()] == [2, 1, 2, 1, 2]
    assert runs == ["cache_book", "cache_author"]  # the other three were hits
    assert cache.get_stats()["hits"] == 3


def test_a_factory_given_a_function_keeps_each_function_s_results(
    db: Database, cache: QueryCache
) -> None:
    def counter(transform: Callable[[int], int]) -> Callable[[], int]:
        @cache.memoize(tables=["cache_book"])
        def count() -> int:
            return transform(len(db.sql("SELECT 1 FROM cache_book")))

        return count

    def times(factor: int) -> Callable[[int], int]:
        return lambda n: n * factor

    assert [counter(lambda n: n * 10)(), counter(lambda n: n + 1)()] == [20, 3]
    assert [counter(times(10))(), counter(times(100))()] == [20, 200]
    assert counter(times(10))() == 20
    assert cache.get_stats()["hits"] == 1  # the same code with the same factor, made again


def test_a_factory_parameterised_by_a_frozen_dataclass_keeps_each_function_s_results(
    db: Database, cache: QueryCache
) -> None:
    @dataclasses.dataclass(frozen=True)
    class Counting:
        table: str
        span: _Span

    runs: list[str] = []

    def counter(config: Counting) -> Callable[[], int]:
        @cache.memoize(tables=["cache_book", "cache_author"])
        def count() -> int:
            runs.append(config.table)
            return len(db.sql(f"SELECT 1 FROM {config.table}"))

        return count

    books = counter(Counting("cache_book", _Span(0, 10)))
    authors = counter(Counting("cache_author", _Span(0, 10)))
    assert [books(), authors(), books(), authors()] == [2, 1, 2, 1]
    assert counter(Counting("cache_book", _Span(0, 10)))() == 2  # an equal value: one entry
    assert runs == ["cache_book", "cache_author"]


def test_a_name_makes_a_factory_s_functions_share_entries(db: Database, cache: QueryCache) -> None:
    def counter(table: str) -> Callable[[], int]:
        @cache.memoize(tables=["cache_book", "cache_author"], name="count:any")
        def count() -> int:
            return len(db.sql(f"SELECT 1 FROM {table}"))

        return count

    assert [counter("cache_book")(), counter("cache_author")()] == [2, 2]  # as named


class _Handle:
    """A class without a ``__repr__``: its only text is its address."""


@dataclasses.dataclass
class _Filter:
    owner: object


def test_an_argument_keyed_only_by_its_address_is_refused(db: Database, cache: QueryCache) -> None:
    runs: list[object] = []

    @cache.memoize(tables=["cache_book"])
    def count(anything: object) -> int:
        runs.append(anything)
        return 0

    for argument in (_Handle(), [1, _Handle()], _Filter(owner=_Handle()), _one, db.engine.pool):
        with pytest.raises(UncacheableCallError, match=r"argument 'anything'.*memory address"):
            count(argument)
    assert runs == []
    assert count(("a", 1)) == 0  # values key a call


async def test_the_async_cache_keys_calls_alike(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    runs: list[int] = []

    async def counted(limit: int, owner: object = None) -> int:
        runs.append(limit)
        return len((await async_db.sql("SELECT id FROM cache_book"))[:limit])

    count = async_cache.memoize(tables=["cache_book"])(counted)
    assert await count(1) == await count(limit=1) == 1
    assert runs == [1]
    with pytest.raises(UncacheableCallError, match="argument 'owner'"):
        await count(1, owner=_Handle())
    named = async_cache.memoize(tables=["cache_book"], name="shop.other")(counted)
    assert await named(1) == 1
    assert runs == [1, 1]  # another name: entries of its own


async def test_the_async_cache_keeps_a_factory_s_functions_apart(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    def counter(table: str) -> Callable[[], Any]:
        @async_cache.memoize(tables=["cache_book", "cache_author"])
        async def count() -> int:
            return len(await async_db.sql(f"SELECT 1 FROM {table}"))

        return count

    books, authors = counter("cache_book"), counter("cache_author")
    assert [await books(), await authors(), await books(), await authors()] == [2, 1, 2, 1]


def _key(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    return CallKeys("ns", fn).key(args, kwargs)


def _one(value: object) -> object:
    return value


class _Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class _Report:
    region: str
    day: dt.date | None = None


class _Span(NamedTuple):
    start: int
    end: int


def test_equal_values_give_one_key_and_different_values_two() -> None:
    assert _key(_one, {"a": 1, "b": [2, 3]}) == _key(_one, {"b": [2, 3], "a": 1})
    assert _key(_one, {3, 1, 2}) == _key(_one, {2, 3, 1})
    distinct = [1, 1.0, "1", b"1", True, None, (1,), [1], {1}, frozenset({1}), {1: 1}, _Colour.RED]
    assert len({_key(_one, value) for value in distinct}) == len(distinct)
    other = enum.Enum("_Colour", {"RED": 1}, module="elsewhere")  # type: ignore[misc]
    assert _key(_one, other.RED) != _key(_one, _Colour.RED)  # one class name, two modules


def test_a_container_holding_itself_is_refused() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(UncacheableCallError, match="contains itself"):
        _key(_one, loop)


def test_a_set_s_order_does_not_change_its_key() -> None:
    # 9 and 1 share a slot of a small set's table: the one added first iterates first, as the
    # strings of one set do in an order that each process's hash seed decides
    first, second = {9}, {1}
    first.add(1)
    second.add(9)
    assert list(first) != list(second)
    assert _key(_one, first) == _key(_one, second)
    assert _key(_one, frozenset(first)) == _key(_one, frozenset(second))


def _two(a: int, b: int = 2) -> int:
    return a + b


def test_every_way_of_passing_the_same_arguments_gives_one_key() -> None:
    keys = {_key(_two, 1, 2), _key(_two, 1), _key(_two, a=1, b=2), _key(_two, 1, b=2)}
    assert len(keys) == 1
    assert _key(_two, 1, 3) not in keys


def _made_by(*captured: Any) -> Callable[[], object]:
    """A function made by a factory, capturing ``captured`` (one value, or one of each)."""
    (first, *_) = captured

    def made() -> object:
        return first, captured

    return made


def test_what_a_factory_s_function_captured_keys_it_when_it_parameterises_it() -> None:
    for one, other in [
        (1, 2),
        ("a", "b"),
        (1, 1.0),
        (_Colour.RED, 1),
        (_Handle, _Filter),
        (_one, _key),
        ((1, "a"), (1, "b")),
        (frozenset({1, 2}), frozenset({1, 3})),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 2)),
        (dt.datetime(2024, 1, 1), dt.date(2024, 1, 1)),
        (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
        (uuid.UUID(int=1), uuid.UUID(int=2)),
        (_Report("eu"), _Report("us")),
        (_Report("eu"), _Report("eu", dt.date(2024, 1, 1))),
        (_Span(1, 2), _Span(1, 3)),
        (_Span(1, 2), (1, 2)),
        (_Report("eu", _Handle()), _Report("us", _Handle())),  # type: ignore[arg-type]
        ((1, [2]), (2, [2])),  # the values beside state still count
    ]:
        assert CallKeys("ns", _made_by(one)).key((), {}) != CallKeys("ns", _made_by(other)).key(
            (), {}
        ), (one, other)
        assert CallKeys("ns", _made_by(one)).key((), {}) == CallKeys("ns", _made_by(one)).key(
            (), {}
        ), one
    assert _key(_made_by(frozenset({1, 2, 3}))) == _key(_made_by(frozenset({3, 2, 1})))
    # state, or what has no value but its address, keys nothing
    for one, other in [
        ([1], [2]),
        ({"a": 1}, {"a": 2}),
        (_Handle(), _Handle()),
        ((1, [2]), (1, [3])),
        (_Filter(1), _Filter(2)),  # a mutable dataclass: its fields may change
        (_Report("eu", _Handle()), _Report("eu", _Handle())),  # type: ignore[arg-type]
        (_Span([1], 2), _Span([3], 2)),  # type: ignore[arg-type]
    ]:
        assert _key(_made_by(one)) == _key(_made_by(other)), (one, other)
    assert CallKeys("ns", _made_by(1), "n").key((), {}) == CallKeys("ns", _made_by(2), "n").key(
        (), {}
    )


def test_a_captured_function_made_in_a_function_keys_by_its_code_and_what_it_captured() -> None:
    def scaled(factor: int) -> Callable[[int], int]:
        return lambda value: value * factor

    def bounded(limit: int) -> Callable[..., int]:
        def bound(value: int, most: int = limit) -> int:
            return min(value, most)

        return bound

    def holding(items: list[int]) -> Callable[[], list[int]]:
        return lambda: items

    def walking(depth: int) -> Callable[[int], int]:
        def walk(n: int) -> int:  # itself in its closure
            return depth if n == 0 else walk(n - 1)

        return walk

    plus_one, plus_two = (lambda value: value + 1), (lambda value: value + 2)
    for one, other in [
        (scaled(2), scaled(3)),  # what it captured
        (bounded(1), bounded(2)),  # its defaults
        (plus_one, plus_two),  # one line, one name: their code tells them apart
        (scaled(2), bounded(2)),
        (walking(1), walking(2)),
    ]:
        assert _key(_made_by(one)) != _key(_made_by(other))
    # equal code with equal values: one key, though the closures are new objects
    assert _key(_made_by(scaled(2))) == _key(_made_by(scaled(2)))
    assert _key(_made_by(walking(1))) == _key(_made_by(walking(1)))
    # a function holding state is state, as the state itself is
    assert _key(_made_by(holding([1]))) == _key(_made_by(holding([2])))


def test_a_factory_s_variable_rebound_after_it_made_the_function_keys_its_value() -> None:
    def factory() -> tuple[Callable[[], object], Callable[[int], None]]:
        limit = 1

        def made() -> object:
            return limit

        def rebind(value: int) -> None:
            nonlocal limit
            limit = value

        return made, rebind

    made, rebind = factory()
    keys = CallKeys("ns", made)
    first = keys.key((), {})
    rebind(2)
    assert keys.key((), {}) != first
    rebind(1)
    assert keys.key((), {}) == first
