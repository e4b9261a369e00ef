"""FastAPI glue for the request's transaction (opened by DatabaseMiddleware): dependencies for
its session, repositories, units of work, pagination and filters, and exception handlers
that turn dalkit's errors into HTTP problems.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    AsyncUnitOfWork,
    ConfigurationError,
    Database,
    NotFoundError,
    PoolTimeoutError,
    QueryInputError,
    StatementTimeoutError,
    UniqueViolationError,
    current_async_session,
    current_session,
)
from dalkit.integrations.asgi import STATE_KEY, before_commit
from dalkit.integrations.problems import PROBLEM_JSON, problem

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

#: dalkit error -> HTTP status; subclasses follow their nearest listed base
DEFAULT_ERROR_STATUS: Mapping[type[Exception], int] = {
    NotFoundError: 404,
    QueryInputError: 400,
    UniqueViolationError: 409,
    PoolTimeoutError: 503,
    StatementTimeoutError: 504,
}
#: query parameters that page or sort, never filter
PAGING_PARAMETERS = frozenset({"page", "per_page", "sort", "limit", "offset", "after", "before"})


# -- the request's session, repositories and units of work -------------------------------------
async def session() -> Session:
    """The request's Session (sync Database): ``Depends(session)``."""
    return current_session()


async def async_session() -> AsyncSession:
    """The request's AsyncSession (AsyncDatabase): ``Depends(async_session)``."""
    return current_async_session()


def repository(repository_class: type[R]) -> Callable[[], Awaitable[R]]:
    """A dependency giving ``repository_class`` on the request's session:
    ``users: UserRepository = Depends(repository(UserRepository))``."""

    async def dependency() -> R:
        if issubclass(repository_class, AsyncRepository):
            return repository_class(current_async_session())
        return repository_class(current_session())  # type: ignore[call-arg]

    dependency.__name__ = f"repository_{repository_class.__name__}"
    return dependency


def unit_of_work(
    *, outbox: bool | None = None, actor: Callable[[Request], object] | None = None
) -> Callable[[Request], AsyncIterator[Any]]:
    """A dependency giving a unit of work inside the request's transaction (a savepoint of
    it): its outbox and audit rows commit with the request. It commits when the dependency
    ends (``Depends(unit_of_work(), scope="function")``: before the response), and at the
    latest just before the request's transaction commits. AsyncDatabase only."""

    async def dependency(request: Request) -> AsyncIterator[Any]:
        db = _database(request)
        who = None if actor is None else actor(request)
        if isinstance(db, AsyncDatabase):
            async with AsyncUnitOfWork(db, actor=who, outbox=outbox) as unit:
                before_commit(request.scope, _committer(unit))
                yield unit
            return
        raise ConfigurationError(
            "unit_of_work() needs an AsyncDatabase: FastAPI runs sync dependencies and "
            "endpoints in worker threads, and dalkit lets no other thread join the request's "
            "transaction; with a sync Database use current_session() and repositories"
        )
        yield  # makes this an async generator on every path

    return dependency


def _committer(unit: AsyncUnitOfWork) -> Callable[[], Awaitable[None]]:
    async def commit_if_open() -> None:
        if unit.state == "open":  # not yet ended by its dependency
            await unit.commit()

    return commit_if_open


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
    """``?page=&per_page=&sort=``, for ``Repository.paginate(**params.as_kwargs())``."""

    page: int
    per_page: int
    sort: str | None

    def as_kwargs(self) -> dict[str, Any]:
        return {"page": self.page, "per_page": self.per_page, "sort": self.sort}


@dataclasses.dataclass(frozen=True)
class CursorParams:
    """``?limit=&after=&before=&sort=``, for ``Repository.paginate_cursor(...)``."""

    limit: int
    after: str | None
    before: str | None
    sort: str | None

    def as_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pagination(default_per_page: int = 20) -> Callable[..., Awaitable[PageParams]]:
    """A dependency reading offset-pagination parameters; the repository checks them against
    its ``max_page_size`` and ``sortable`` (a QueryInputError, so a 400, when out of bounds)."""

    async def dependency(
        page: int = 1, per_page: int = default_per_page, sort: str | None = None
    ) -> PageParams:
        return PageParams(page, per_page, sort)

    return dependency


def cursor_pagination(default_limit: int = 20) -> Callable[..., Awaitable[CursorParams]]:
    """A dependency reading keyset-pagination parameters (``after``/``before`` are cursors from
    a previous page's ``next_cursor``/``prev_cursor``)."""

    async def dependency(
        limit: int = default_limit,
        after: str | None = None,
        before: str | None = None,
        sort: str | None = None,
    ) -> CursorParams:
        return CursorParams(limit, after, before, sort)

    return dependency


def filters(
    allowed: Collection[str] | None = None,
    *,
    ignore: Collection[str] = PAGING_PARAMETERS,
    exact: bool = False,
) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """A dependency collecting the query string's ``field`` / ``field__op`` parameters (all
    but ``ignore``) for a repository read, whose allow-list rejects unknown fields with a
    QueryInputError naming the allowed ones. ``allowed`` checks the field names right here
    instead, for filters that are not columns (the error's ``allowed`` lists them); with
    ``exact`` the parameters must be those names, without ``__op`` suffixes."""
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


# -- errors as HTTP problems -------------------------------------------------------------------
Renderer = Callable[[Request, Exception, int], Response]
Handler = Callable[[Request, Exception], Awaitable[Response]]


def error_detail(error: Exception, status: int) -> tuple[str, dict[str, Any]]:
    """What a client may be told about ``error``: a sentence, and extra members. Driver
    messages stay in the logs, since they can quote stored values."""
    if isinstance(error, QueryInputError):
        return str(error), {"name": error.name, "allowed": list(error.allowed)}
    if isinstance(error, NotFoundError):
        return str(error), {}
    if isinstance(error, UniqueViolationError):
        extra = {"constraint": error.constraint} if error.constraint else {}
        return "a row with these values exists already", extra
    if isinstance(error, PoolTimeoutError):
        return "the service is busy; try again shortly", {}
    if isinstance(error, StatementTimeoutError):
        return "the database took too long to answer", {}
    return "the request could not be completed", {}


def problem_response(request: Request, error: Exception, status: int) -> Response:
    """The default rendering: an ``application/problem+json`` document."""
    detail, extra = error_detail(error, status)
    return JSONResponse(problem(status, detail, **extra), status, media_type=PROBLEM_JSON)


def install_error_handlers(
    app: FastAPI,
    *,
    status: Mapping[type[Exception], int] | None = None,
    render: Renderer = problem_response,
    retry_after_s: int = 1,
) -> None:
    """Answer dalkit's errors with HTTP statuses: :data:`DEFAULT_ERROR_STATUS`, updated with
    ``status`` (a status of 0 removes an entry); ``render`` shapes the body. A 503 carries
    ``Retry-After: retry_after_s``."""
    mapping = dict(DEFAULT_ERROR_STATUS)
    for error_class, code in (status or {}).items():
        if code:
            mapping[error_class] = code
        else:
            mapping.pop(error_class, None)
    for error_class, code in mapping.items():
        app.add_exception_handler(error_class, _handler(code, render, retry_after_s))


def _handler(status: int, render: Renderer, retry_after_s: int) -> Handler:
    async def handle(request: Request, error: Exception) -> Response:
        response = render(request, error, status)
        if status == 503:
            response.headers["Retry-After"] = str(retry_after_s)
        return response

    return handle
