"""What ``db.transaction()``, ``db.session()``, ``db.connection()`` and
``db.driver_connection()`` return: a with-block of one colour, which opens what it gives when
entered. `OtherColourRefused`, its base and that of the units of work
and databases, refuses the with-statement of the other colour (``with`` on an async one,
``async with`` on a sync one) with a TransactionUsageError that says which to use, having
opened nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from dalkit.errors import TransactionUsageError

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
_T = TypeVar("_T")


class _Block(OtherColourRefused, Generic[_BlockT]):
    """A with-block: what opens it, what the refusals call it, and the one running."""

    __slots__ = ("_open", "_running", "_subject")
    #: what the refusals call a block given no subject
    _default_subject: ClassVar[str] = ""

    def __init__(self, open_block: Callable[[], _BlockT], subject: str | None = None) -> None:
        self._open = open_block
        self._running: _BlockT | None = None
        self._subject = subject or type(self)._default_subject

    def _opened(self) -> _BlockT:
        # one block, one transaction at a time: a block entered again before it exits (shared
        # between threads or tasks) would end the other's transaction
        if self._running is not None:
            raise TransactionUsageError(
                f"this {self._subject} block is already entered: call it again for each "
                "with-statement"
            )
        return self._open()

    def _ending(self) -> _BlockT:
        block, self._running = self._running, None
        assert block is not None
        return block


class TransactionBlock(_Block[AbstractContextManager[_T]], Generic[_T]):
    """A sync with-block (a transaction's, a connection's); ``async with`` is refused."""

    __slots__ = ()
    _default_subject = "Database.transaction() (or session())"

    def __enter__(self) -> _T:
        block = self._opened()
        given = block.__enter__()
        self._running = block
        return given

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return self._ending().__exit__(kind, error, traceback)


class AsyncTransactionBlock(_Block[AbstractAsyncContextManager[_T]], Generic[_T]):
    """An async with-block (a transaction's, a connection's); a plain ``with`` is refused."""

    __slots__ = ()
    _default_subject = "AsyncDatabase.transaction() (or session())"

    async def __aenter__(self) -> _T:
        block = self._opened()
        given = await block.__aenter__()
        self._running = block
        return given

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._ending().__aexit__(kind, error, traceback)
