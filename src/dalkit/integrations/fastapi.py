"""FastAPI glue for the request's transaction (opened by DatabaseMiddleware): dependencies for
its session, repositories, units of work, pagination and filters; the exception handlers
that turn dalkit's errors into HTTP problems come from ``http_errors``."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeVar, cast

from sqlalchemy.orm import Session

from dalkit.extras import missing_extra

try:
    from anyio.to_thread import run_sync
    from fastapi import Request
    from sqlalchemy.ext.asyncio import AsyncSession
except ImportError as exc:  # a core install: say which extra brings it
    raise missing_extra("dalkit.integrations.fastapi", "web", exc) from exc

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    AsyncUnitOfWork,
    ConfigurationError,
    Database,
    QueryInputError,
    UnitOfWork,
    audit,
    current_async_session,
    current_session,
)
from dalkit.integrations.asgi import STATE_KEY, before_commit
from dalkit.integrations.http_errors import (
    DEFAULT_ERROR_STATUS,
    error_detail,
    install_error_handlers,
    problem_response,
)

__all__ = [
    "DEFAULT_ERROR_STATUS",
    "CursorParams",
    "PageParams",
    "async_session",
    "cursor_pagination",
    "error_detail",
    "filters",
    "install_error_handlers",
    "pagination",
    "problem_response",
    "repository",
    "session",
    "unit_of_work",
]

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

#: query parameters that page or sort, never filter
PAGING_PARAMETERS = frozenset({"page", "per_page", "sort", "limit", "offset", "after", "before"})


def _one_per_arguments(factory: F) -> F:
    """``factory`` giving the same dependency for the same arguments: FastAPI's
    ``app.dependency_overrides`` is keyed by the dependency, so a test's
    ``overrides[repository(Notes)]`` must be the one the routes got, not a new one (ignored)."""
    made: dict[object, Any] = {}
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def same(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = tuple((name, _frozen(value)) for name, value in bound.arguments.items())
        try:
            hash(key)
        except TypeError:  # an argument that can be no key: a dependency of its own
            return factory(*args, **kwargs)
        if key not in made:
            made[key] = factory(*args, **kwargs)
        return made[key]

    return cast(F, same)


def _frozen(value: object) -> object:
    if isinstance(value, list):  # filters(allowed=[...])
        return tuple(value)
    return frozenset(value) if isinstance(value, set) else value


# -- the request's session, repositories and units of work -------------------------------------
async def session() -> Session:
    """The request's Session (sync Database): ``Depends(session)``.

    Returns:
        The session of the request's transaction.

    Raises:
        NoActiveTransactionError: outside a request running under DatabaseMiddleware.
    """
    return current_session()


async def async_session() -> AsyncSession:
    """The request's AsyncSession (AsyncDatabase): ``Depends(async_session)``.

    Returns:
        The session of the request's transaction.

    Raises:
        NoActiveTransactionError: outside a request running under DatabaseMiddleware.
    """
    return current_async_session()


@_one_per_arguments
def repository(repository_class: type[R]) -> Callable[[], Awaitable[R]]:
    """A dependency giving ``repository_class`` on the request's session.

    Args:
        repository_class: a [`Repository`][dalkit.Repository] or
            [`AsyncRepository`][dalkit.AsyncRepository] subclass.

    Returns:
        The dependency.

    Examples:
        ```python test="skip"
        users: Annotated[UserRepository, Depends(repository(UserRepository))]
        ```
    """

    async def dependency() -> R:
        if issubclass(repository_class, AsyncRepository):
            return repository_class(current_async_session())
        return repository_class(current_session())  # type: ignore[call-arg]

    dependency.__name__ = f"repository_{repository_class.__name__}"
    return dependency


@_one_per_arguments
def unit_of_work(
    *, outbox: bool | None = None, actor: Callable[[Request], object] | None = None
) -> Callable[[Request], AsyncIterator[Any]]:
    """A dependency giving a unit of work inside the request's transaction (a savepoint of it).

    Its outbox and audit rows commit with the request. It commits when the dependency ends
    (``Depends(unit_of_work(), scope="function")``: before the response), and at the latest
    just before the request's transaction commits. With an
    [`AsyncDatabase`][dalkit.AsyncDatabase] it is an
    [`AsyncUnitOfWork`][dalkit.AsyncUnitOfWork]; with a [`Database`][dalkit.Database] a
    [`UnitOfWork`][dalkit.UnitOfWork] for sync endpoints, whose SAVEPOINT, flushes and
    release run in worker threads, never on the event loop.

    Args:
        outbox: store the unit's events in the outbox (None: the database's setting).
        actor: a function of the request (plain or async) naming who acts, for the audit log.

    Returns:
        The dependency.

    Examples:
        ```python test="skip"
        Unit = Annotated[AsyncUnitOfWork, Depends(unit_of_work(outbox=True), scope="function")]
        ```
    """

    async def dependency(request: Request) -> AsyncIterator[Any]:
        db = _database(request)
        who = None if actor is None else actor(request)
        if inspect.isawaitable(who):  # an async function: its coroutine would name no one
            who = await who
        if isinstance(db, AsyncDatabase):
            async with AsyncUnitOfWork(db, actor=who, outbox=outbox) as unit:
                before_commit(request.scope, _committer(unit))
                yield unit
            return
        # the actor is set here, in the request's task, whose context the worker threads of
        # sync endpoints copy; the unit's own I/O runs in worker threads
        sync_unit = UnitOfWork(db, outbox=outbox)
        with contextlib.nullcontext() if who is None else audit.actor(who):
            await run_sync(sync_unit.__enter__)
            before_commit(request.scope, functools.partial(_commit_if_open, sync_unit))
            try:
                yield sync_unit
            except BaseException as error:
                await run_sync(sync_unit.__exit__, type(error), error, error.__traceback__)
                raise
            await run_sync(sync_unit.__exit__, None, None, None)

    return dependency


def _committer(unit: AsyncUnitOfWork) -> Callable[[], Awaitable[None]]:
    async def commit_if_open() -> None:
        if unit.state == "open":  # not yet ended by its dependency
            await unit.commit()

    return commit_if_open


def _commit_if_open(unit: UnitOfWork) -> None:
    if unit.state == "open":  # not yet ended by its dependency
        unit.commit()


def _database(request: Request) -> Database | AsyncDatabase:
    db = getattr(request.state, STATE_KEY, None)
    if not isinstance(db, Database | AsyncDatabase):
        raise ConfigurationError(
            "no request transaction: add DatabaseMiddleware to the application "
            "(app.add_middleware(DatabaseMiddleware, db=db))"
        )
    return db


# -- paging and filtering ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PageParams:
    """``?page=&per_page=&sort=``, for ``Repository.paginate(**params.as_kwargs())``.

    Attributes:
        page: the page number, from 1.
        per_page: rows a page.
        sort: the sort order (``"-created_at,id"``), or None for the repository's default.
    """

    page: int
    per_page: int
    sort: str | None

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Repository.paginate``.

        Returns:
            ``page``, ``per_page`` and ``sort``.
        """
        return {"page": self.page, "per_page": self.per_page, "sort": self.sort}


@dataclasses.dataclass(frozen=True)
class CursorParams:
    """``?limit=&after=&before=&sort=``, for ``Repository.paginate_cursor(...)``.

    Attributes:
        limit: rows a page.
        after: the cursor of the page before (its ``next_cursor``), or None.
        before: the cursor of the page after (its ``prev_cursor``), or None.
        sort: the sort order, or None for the repository's default.
    """

    limit: int
    after: str | None
    before: str | None
    sort: str | None

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Repository.paginate_cursor``.

        Returns:
            ``limit``, ``after``, ``before`` and ``sort``.
        """
        return dataclasses.asdict(self)


@_one_per_arguments
def pagination(default_per_page: int = 20) -> Callable[..., Awaitable[PageParams]]:
    """A dependency reading offset-pagination parameters.

    The repository checks them against its ``max_page_size`` and ``sortable``: out of bounds,
    a [`QueryInputError`][dalkit.QueryInputError], so a 400.

    Args:
        default_per_page: ``per_page`` when the query string has none.

    Returns:
        The dependency, giving a [`PageParams`][dalkit.integrations.fastapi.PageParams].
    """

    async def dependency(
        page: int = 1, per_page: int = default_per_page, sort: str | None = None
    ) -> PageParams:
        return PageParams(page, per_page, sort)

    return dependency


@_one_per_arguments
def cursor_pagination(default_limit: int = 20) -> Callable[..., Awaitable[CursorParams]]:
    """A dependency reading keyset-pagination parameters.

    ``after`` and ``before`` are cursors from a previous page's ``next_cursor`` and
    ``prev_cursor``.

    Args:
        default_limit: ``limit`` when the query string has none.

    Returns:
        The dependency, giving a [`CursorParams`][dalkit.integrations.fastapi.CursorParams].
    """

    async def dependency(
        limit: int = default_limit,
        after: str | None = None,
        before: str | None = None,
        sort: str | None = None,
    ) -> CursorParams:
        return CursorParams(limit, after, before, sort)

    return dependency


@_one_per_arguments
def filters(
    allowed: Collection[str] | None = None,
    *,
    ignore: Collection[str] = PAGING_PARAMETERS,
    exact: bool = False,
) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """A dependency collecting the query string's ``field`` / ``field__op`` parameters.

    They are meant for a repository read, whose allow-list rejects unknown fields with a
    [`QueryInputError`][dalkit.QueryInputError] naming the allowed ones.

    Args:
        allowed: check the field names right here instead, for filters that are not columns
            (the error's ``allowed`` lists them).
        ignore: parameters that are not filters (paging and sorting by default).
        exact: the parameters must be the ``allowed`` names, without ``__op`` suffixes.

    Returns:
        The dependency, giving the filters as a dict.

    Raises:
        QueryInputError: (from the dependency) for a parameter ``allowed`` does not name.
    """
    allowed_names = None if allowed is None else frozenset(allowed)

    async def dependency(request: Request) -> dict[str, Any]:
        found = {k: v for k, v in request.query_params.items() if k not in ignore}
        if allowed_names is not None:
            for key in found:
                if (key if exact else key.split("__", 1)[0]) not in allowed_names:
                    raise QueryInputError(
                        f"unknown or disallowed filter {key[:60]!r}",
                        name=key,
                        allowed=sorted(allowed_names),
                    )
        return found

    return dependency
