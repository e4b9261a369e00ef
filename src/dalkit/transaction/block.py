"""What ``db.transaction()`` and ``db.session()`` return: a with-block of one colour, which
opens its transaction when entered. `OtherColourRefused`, its base and that of the units of work
and databases, refuses the with-statement of the other colour (``with`` on an async one,
``async with`` on a sync one) with a TransactionUsageError that says which to use, having
opened nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dalkit.errors import TransactionUsageError
from dalkit.transaction.options import TransactionOptions

if TYPE_CHECKING:  # not at run time: the sync API runs without greenlet, which asyncio needs
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["AsyncTransactionBlock", "OtherColourRefused", "TransactionBlock"]


class OtherColourRefused:
    """A base whose subclasses define the with-statement of their colour: the other one,
    inherited from here, is refused rather than fail with Python's own TypeError."""

    __slots__ = ()
    #: what the refusals name; the class's name unless set
    _subject: str = ""

    # hidden from type checkers, which keep refusing the wrong with-statement before it runs
    if not TYPE_CHECKING:

        def __enter__(self) -> Any:
            raise TransactionUsageError(
                f"{self._subject or type(self).__name__} is an async context manager: use "
                "'async with', not 'with', which cannot await the database; nothing was opened"
            )

        def __exit__(self, *exc_info: object) -> None:
            """Never reached: entering is refused."""

        async def __aenter__(self) -> Any:
            raise TransactionUsageError(
                f"{self._subject or type(self).__name__} is a sync context manager: use 'with', "
                "not 'async with' (under asyncio, its AsyncDatabase twin); nothing was opened"
            )

        async def __aexit__(self, *exc_info: object) -> None:
            """Never reached: entering is refused."""


_BlockT = TypeVar("_BlockT")


class _Block(OtherColourRefused, Generic[_BlockT]):
    """A transaction as a with-block: what opens it, with which options, and the one running."""

    __slots__ = ("_open", "_options", "_running")

    def __init__(
        self, open_block: Callable[[TransactionOptions], _BlockT], options: TransactionOptions
    ) -> None:
        self._open = open_block
        self._options = options
        self._running: _BlockT | None = None

    def _opened(self) -> _BlockT:
        # one block, one transaction at a time: a block entered again before it exits (shared
        # between threads or tasks) would end the other's transaction
        if self._running is not None:
            raise TransactionUsageError(
                "this transaction block is already entered: call db.transaction() (or "
                "session()) for each with-statement"
            )
        return self._open(self._options)

    def _ending(self) -> _BlockT:
        block, self._running = self._running, None
        assert block is not None
        return block


class TransactionBlock(_Block[AbstractContextManager["Session"]]):
    """A sync transaction as a with-block; ``async with`` is refused."""

    __slots__ = ()
    _subject = "Database.transaction() (or session())"

    def __enter__(self) -> Session:
        block = self._opened()
        session = block.__enter__()
        self._running = block
        return session

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return self._ending().__exit__(kind, error, traceback)


class AsyncTransactionBlock(_Block[AbstractAsyncContextManager["AsyncSession"]]):
    """An async transaction as a with-block; a plain ``with`` is refused."""

    __slots__ = ()
    _subject = "AsyncDatabase.transaction() (or session())"

    async def __aenter__(self) -> AsyncSession:
        block = self._opened()
        session = await block.__aenter__()
        self._running = block
        return session

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._ending().__aexit__(kind, error, traceback)
