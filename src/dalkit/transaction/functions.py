"""What a transaction function may be and how it takes its session: generator functions (and,
for a sync transaction, coroutine functions and coroutines returned) are refused, since their
bodies would run after the transaction ended, and so is, for an async transaction, a function
that returns nothing to await; ``session`` is passed where the function names it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from types import CodeType, CoroutineType, FunctionType
from typing import Any, Literal, TypeVar

from dalkit.errors import TransactionUsageError

__all__ = [
    "SessionParameter",
    "check_transaction_function",
    "check_transaction_result",
    "session_parameter",
    "transaction_result_async",
]

R = TypeVar("R")

#: How a transaction function takes its session; see `session_parameter()`.
SessionParameter = Literal["first", "second", "keyword"] | None


def check_transaction_function(fn: Callable[..., Any], *, is_async: bool) -> None:
    """Refuse a function whose body would run after its transaction ended: a generator (its
    body runs as it is iterated, later) and, for a sync transaction, a coroutine function
    (nothing awaits it).

    Args:
        fn: The function to run in a transaction.
        is_async: Whether the transaction is an async one.

    Raises:
        TransactionUsageError: For such a function (a TypeError).
    """
    late = CO_GENERATOR | CO_ASYNC_GENERATOR | (0 if is_async else CO_COROUTINE)
    if type(fn) is FunctionType and not fn.__code__.co_flags & late:
        return  # a plain function, the common case: one test (the inspect calls: 0.85 us)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        problem = "a generator function: its body would run as it is iterated, after the commit"
    elif not is_async and inspect.iscoroutinefunction(fn):
        problem = "a coroutine function, but this is a sync transaction: nothing would await it"
    else:
        return
    raise TransactionUsageError(
        f"{getattr(fn, '__qualname__', fn)} is {problem}; run the transaction inside it, or "
        "collect what it yields into a list and return that"
    )


def check_transaction_result(fn: Callable[..., Any], result: R) -> R:
    """Refuse what a transaction function returned if it is a coroutine, before the transaction
    commits: a callable whose ``__call__`` is a coroutine function passes
    `check_transaction_function()`, but its body would run only when awaited, after the commit
    (a sync transaction would commit nothing and hand the work back unawaited).

    Args:
        fn: The function that ran.
        result: What it returned (awaited, in an async transaction).

    Returns:
        ``result``.

    Raises:
        TransactionUsageError: For a coroutine (a TypeError); it is closed, never run.
    """
    if isinstance(result, CoroutineType):
        result.close()
        raise TransactionUsageError(
            f"{getattr(fn, '__qualname__', type(fn).__qualname__)} returned a coroutine, which "
            "would run after the transaction ended: await the work inside the transaction"
        )
    return result


async def transaction_result_async(fn: Callable[..., Any], returned: Awaitable[R]) -> R:
    """What an async transaction function's call returned, awaited and checked as
    `check_transaction_result()` does. A plain function (``def``, not ``async def``) returns
    no awaitable: it is refused, and its transaction rolled back, rather than Python's
    ``TypeError`` from the ``await`` (or an AttributeError from the session's un-awaited
    coroutines) leaving the caller to guess.

    Args:
        fn: The function that was called.
        returned: What the call returned.

    Returns:
        What awaiting it gave.

    Raises:
        TransactionUsageError: When it returned no awaitable (a TypeError).
    """
    if not inspect.isawaitable(returned):
        raise TransactionUsageError(
            f"{getattr(fn, '__qualname__', type(fn).__qualname__)} returned "
            f"{type(returned).__name__}, not an awaitable: AsyncDatabase runs coroutine "
            "functions (async def), whose session calls are awaited; make it async def, or "
            "run it with the sync Database"
        )
    return check_transaction_result(fn, await returned)


def session_parameter(fn: Callable[..., Any]) -> SessionParameter:
    """How ``fn`` takes the session: ``"first"`` when ``session`` is its first parameter
    (passed positionally, before the caller's arguments), ``"second"`` when it is the second
    (after ``self`` or ``cls`` in a method decorated in its class body: passed after the first
    argument), ``"keyword"`` when it is declared elsewhere (passed as ``session=``), None when
    it takes none."""
    if type(fn) is FunctionType and "__wrapped__" not in fn.__dict__:
        return _code_session_parameter(fn.__code__, 0)  # a plain function: the common case
    func = getattr(fn, "__func__", None)
    target = inspect.unwrap(func if func is not None else fn)
    code = getattr(target, "__code__", None)
    if isinstance(code, CodeType):
        # a bound method's first name is self, already bound
        return _code_session_parameter(code, 1 if func is not None else 0)
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    for index, parameter in enumerate(parameters):
        if parameter.name != "session":
            continue
        if index == 0 and parameter.kind is not parameter.KEYWORD_ONLY:
            return "first"
        if index == 1 and parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
            return "second"
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            return "keyword"
    return None


# code object -> its answer; there are only as many as the program has functions
@functools.lru_cache(maxsize=1024)
def _code_session_parameter(code: CodeType, bound: int) -> SessionParameter:
    positional = code.co_varnames[bound : code.co_argcount]
    if positional and positional[0] == "session":
        return "first"
    if len(positional) > 1 and positional[1] == "session":
        return "second"
    # keyword-passable names: past the positional-only ones, up to the keyword-only ones
    keyword = code.co_varnames[code.co_posonlyargcount : code.co_argcount + code.co_kwonlyargcount]
    return "keyword" if "session" in keyword else None
