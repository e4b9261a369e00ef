"""Keys of memoized functions defined in place: lambdas, functions made in a function, methods
of classes made in a function. Those sharing a qualified name keep their own entries; the same
one made again (a request's handler) finds its own."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from dalkit import Database
from dalkit.cache import QueryCache
from dalkit.cache.call_keys import CallKeys


def _key(fn: Callable[..., Any], *args: Any) -> str:
    return CallKeys("ns", fn).key(args, {})


def _pick(kind: str) -> Callable[[int], int]:
    """One of two functions of one qualified name (``_pick.<locals>.f``), capturing nothing."""
    if kind == "plus":

        def f(x: int) -> int:
            return x + 1

    else:

        def f(x: int) -> int:
            return x * 10

    return f


def _service(prefix: str) -> Any:
    """An instance of a class made here, holding ``prefix`` as a class attribute."""

    class Service:
        PREFIX = prefix

        def __repr__(self) -> str:
            return "Service()"

        def label(self, name: str) -> str:
            return self.PREFIX + name

        def parent(self) -> str:
            return super().__repr__()  # __class__ in its closure

    return Service()


def _holding(n: int) -> Callable[[], int]:
    """A function capturing a class made in its factory."""

    class Settings:
        N = n

    def read() -> int:
        return Settings.N

    return read


def test_memoized_functions_sharing_a_qualified_name_keep_their_own_results(
    db: Database, cache: QueryCache
) -> None:
    memo = cache.memoize(tables=["cache_book"])
    plus, times = memo(lambda x: x + 1), memo(lambda x: x * 10)  # both "<lambda>"
    assert (plus(2), times(2)) == (3, 20)  # was (3, 3): the second served the first's entry
    assert (memo(_pick("plus"))(2), memo(_pick("times"))(2)) == (3, 20)
    a, b = _service("a"), _service("b")
    label = memo(type(a).label)
    assert (label(a, "x"), label(b, "x")) == ("ax", "bx")
    assert (memo(_holding(1))(), memo(_holding(2))()) == (1, 2)
    hits = cache.get_stats()["hits"]
    assert memo(_pick("plus"))(2) == 3  # made again: its own entry again
    assert memo(_holding(1))() == 1
    assert cache.get_stats()["hits"] == hits + 2


def test_local_code_keys_by_what_it_does_and_holds_alike_in_each_making() -> None:
    # each pair on one line, of one name, one length of bytecode
    calls = lambda x: operator.neg(x), lambda x: operator.pos(x)
    tuples = lambda x: x in (1, 2), lambda x: x in (1, 3)
    inner = lambda x: sorted(x, key=lambda v: -v), lambda x: sorted(x, key=lambda v: +v)
    for one, other in [calls, tuples, inner]:
        assert _key(one, 1) != _key(other, 1)
    assert _key(_pick("plus"), 1) != _key(_pick("times"), 1)
    assert _key(_pick("plus"), 1) == _key(_pick("plus"), 1)
    assert _key(_holding(1)) != _key(_holding(2))
    assert _key(_holding(1)) == _key(_holding(1))
    label = type(_service("a")).label
    assert _key(label, _service("a"), "x") != _key(label, _service("b"), "x")
    assert _key(label, _service("a"), "x") == _key(label, _service("a"), "x")
