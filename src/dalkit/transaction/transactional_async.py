"""``AsyncTransactional``: transaction options bound to one database,
as ``db.transactional(...)`` returns them, used as a decorator or a runner of single calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from sqlalchemy.ext.asyncio import AsyncSession

from dalkit.transaction.functions import check_transaction_function, session_parameter
from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.retry import RetryPolicy
from dalkit.transaction.scope import AsyncTransactionScope

if TYPE_CHECKING:
    from dalkit.transaction.runner_async import AsyncTransactionRunner

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


class AsyncTransactional:
    """Transaction options bound to one database, as ``db.transactional(...)`` returns them: a
    decorator, and a runner of single calls (`run()`). When the function takes the session
    as its first parameter, that parameter is dropped from the signature callers see.

    Examples:
        ```python
        serializable = db.transactional(isolation="SERIALIZABLE", retry=10)


        @serializable
        async def place_order(session, cart_id: int) -> int: ...


        async def cancel_order(session, order_id: int) -> None: ...


        await serializable.run(cancel_order, 7)  # one call with the same options
        ```
    """

    __slots__ = ("_options", "_policy", "_runner")

    def __init__(
        self,
        runner: AsyncTransactionRunner,
        options: TransactionOptions,
        policy: RetryPolicy | None,
    ) -> None:
        self._runner = runner
        self._options = options
        self._policy = policy

    @overload
    def __call__(
        self, fn: Callable[Concatenate[AsyncSession, P], Awaitable[R]], /
    ) -> Callable[P, Awaitable[R]]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, AsyncSession, P], Awaitable[R]], /
    ) -> Callable[Concatenate[S, P], Awaitable[R]]: ...  # a method: session after self

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...

    def __call__(self, fn: Callable[..., Awaitable[R]], /) -> Callable[..., Awaitable[R]]:
        return self._runner.decorate(fn, self._options, self._policy)

    @overload
    async def run(
        self,
        fn: Callable[Concatenate[AsyncSession, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def run(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    async def run(self, fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` in a transaction with these options, run again whole after a
        retryable failure; every keyword argument is ``fn``'s.

        Args:
            fn: The function; its first parameter ``session`` (if any) is filled in.
            *args: Positional arguments of ``fn``.
            **kwargs: Keyword arguments of ``fn``.

        Returns:
            What ``fn`` returns.

        Raises:
            RetryExhaustedError: When retryable failures outlasted the retry policy.
            CommitOutcomeUnknownError: When the connection broke during COMMIT (not retried).
            TypeError: For a generator function (and, in a sync transaction, a coroutine
                function), whose body would run after the commit.
        """
        check_transaction_function(fn, is_async=AsyncTransactionScope.is_async)
        inject = None if "session" in kwargs else session_parameter(fn)
        return await self._runner.run(fn, args, kwargs, self._options, self._policy, inject=inject)
