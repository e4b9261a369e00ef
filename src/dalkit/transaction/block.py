"""What ``db.transaction()`` and ``db.session()`` return: a with-block of one colour, which
opens its transaction when entered, and refuses the with-statement of the other colour
(``with`` on an AsyncDatabase's, ``async with`` on a Database's) with a TransactionUsageError
that says which to use, having opened nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

from dalkit.errors import TransactionUsageError
from dalkit.transaction.options import TransactionOptions

if TYPE_CHECKING:  # not at run time: the sync API runs without greenlet, which asyncio needs
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["AsyncTransactionBlock", "TransactionBlock"]

_ASYNC_WITH_WANTED = (
    "AsyncDatabase.transaction() and session() are async context managers: use "
    "'async with db.transaction() as session:' (a plain 'with' cannot await the database); "
    "nothing was opened"
)
_WITH_WANTED = (
    "Database.transaction() and session() are sync context managers: use "
    "'with db.transaction() as session:', or an AsyncDatabase for 'async with'; nothing was "
    "opened"
)


def _check_not_entered(running: object) -> None:
    """One block, one transaction at a time: a block entered again before it exits (shared
    between threads or tasks) would end the other's transaction."""
    if running is not None:
        raise TransactionUsageError(
            "this transaction block is already entered: call db.transaction() (or session()) "
            "for each with-statement"
        )


class TransactionBlock:
    """A sync transaction as a with-block; ``async with`` is refused."""

    __slots__ = ("_open", "_options", "_running")

    def __init__(
        self,
        open_block: Callable[[TransactionOptions], AbstractContextManager[Session]],
        options: TransactionOptions,
    ) -> None:
        self._open = open_block
        self._options = options
        self._running: AbstractContextManager[Session] | None = None

    def __enter__(self) -> Session:
        _check_not_entered(self._running)
        block = self._open(self._options)
        session = block.__enter__()
        self._running = block
        return session

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        block, self._running = self._running, None
        assert block is not None
        return block.__exit__(kind, error, traceback)

    async def __aenter__(self) -> NoReturn:
        raise TransactionUsageError(_WITH_WANTED)

    async def __aexit__(self, *exc_info: object) -> None:
        """Never reached: entering is refused."""


class AsyncTransactionBlock:
    """An async transaction as a with-block; a plain ``with`` is refused."""

    __slots__ = ("_open", "_options", "_running")

    def __init__(
        self,
        open_block: Callable[[TransactionOptions], AbstractAsyncContextManager[AsyncSession]],
        options: TransactionOptions,
    ) -> None:
        self._open = open_block
        self._options = options
        self._running: AbstractAsyncContextManager[AsyncSession] | None = None

    async def __aenter__(self) -> AsyncSession:
        _check_not_entered(self._running)
        block = self._open(self._options)
        session = await block.__aenter__()
        self._running = block
        return session

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        block, self._running = self._running, None
        assert block is not None
        return await block.__aexit__(kind, error, traceback)

    def __enter__(self) -> NoReturn:
        raise TransactionUsageError(_ASYNC_WITH_WANTED)

    def __exit__(self, *exc_info: object) -> None:
        """Never reached: entering is refused."""
