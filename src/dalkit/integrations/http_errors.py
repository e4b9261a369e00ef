"""dalkit's errors as HTTP problems in FastAPI: which status each error gets, what a client
may be told about it, and the exception handlers that answer it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dalkit.extras import missing_extra

try:
    from fastapi import FastAPI, Request
    from starlette.responses import JSONResponse, Response
except ModuleNotFoundError as exc:  # a core install: say which extra brings it
    raise missing_extra("dalkit.integrations.fastapi", "web", exc) from exc

from dalkit import (
    LockNotAvailableError,
    NotFoundError,
    PoolTimeoutError,
    QueryInputError,
    StatementTimeoutError,
    UniqueViolationError,
)
from dalkit.integrations.problems import PROBLEM_JSON, problem

__all__ = [
    "DEFAULT_ERROR_STATUS",
    "Renderer",
    "error_detail",
    "install_error_handlers",
    "problem_response",
]

DEFAULT_ERROR_STATUS: Mapping[type[Exception], int] = {
    NotFoundError: 404,
    QueryInputError: 400,
    UniqueViolationError: 409,
    PoolTimeoutError: 503,
    StatementTimeoutError: 504,
    LockNotAvailableError: 503,
}
"""dalkit error -> HTTP status; subclasses follow their nearest listed base."""
Renderer = Callable[[Request, Exception, int], Response | Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


def error_detail(error: Exception, status: int) -> tuple[str, dict[str, Any]]:
    """What a client may be told about ``error``.

    Driver messages stay in the logs, since they can quote stored values.

    Args:
        error: the dalkit error being answered.
        status: the HTTP status it is answered with.

    Returns:
        A sentence, and extra members for the problem document.
    """
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
    if isinstance(error, LockNotAvailableError):
        return "what the request changes is in use; try again shortly", {}
    return "the request could not be completed", {}


def problem_response(request: Request, error: Exception, status: int) -> Response:
    """The default rendering: an ``application/problem+json`` document.

    Args:
        request: the request being answered.
        error: the dalkit error being answered.
        status: the HTTP status to answer with.

    Returns:
        The response.
    """
    detail, extra = error_detail(error, status)
    return JSONResponse(problem(status, detail, **extra), status, media_type=PROBLEM_JSON)


def install_error_handlers(
    app: FastAPI,
    *,
    status: Mapping[type[Exception], int] | None = None,
    render: Renderer = problem_response,
    retry_after_s: int = 1,
) -> None:
    """Answer dalkit's errors with HTTP statuses.

    Args:
        app: the application.
        status: changes to ``DEFAULT_ERROR_STATUS`` (error class to status; a status of 0
            removes an entry); subclasses follow their nearest listed base.
        render: shapes the response of an error, its status given (a plain or an async
            function).
        retry_after_s: the ``Retry-After`` of a 503.

    Examples:
        ```python test="skip"
        install_error_handlers(app, status={NotFoundError: 410})
        ```
    """
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
        if inspect.isawaitable(response):  # an async render
            response = await response
        if status == 503:
            response.headers["Retry-After"] = str(retry_after_s)
        return response

    return handle
