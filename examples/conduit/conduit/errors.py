"""Every error as the spec's ``{"errors": {"body": [...]}}``: validation (422), HTTP errors
(401, 403, 404) and dalkit's errors through its handlers (unknown filters 400, missing rows
404, duplicates 422, a busy pool 503)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from dalkit import NotFoundError, QueryInputError, UniqueViolationError
from dalkit.integrations.fastapi import error_detail, install_error_handlers


def errors(status: int, *messages: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": {"body": list(messages)}}, status, headers=headers)


def _message(error: dict[str, Any]) -> str:
    where = [str(part) for part in error["loc"][1:] if not isinstance(part, int)]
    field = where[-1] if where else "body"
    kind = error["type"]
    if kind == "string_too_short":
        return f"{field} can't be empty"
    if kind == "string_too_long":
        return f"{field} is too long (at most {error['ctx']['max_length']} characters)"
    if kind == "missing":
        return f"{field} is missing"
    if kind == "value_error":
        return f"{field} {error['ctx']['error']}"
    return f"{field}: {error['msg']}"


async def _validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    return errors(422, *(_message(e) for e in error.errors()))


async def _http(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return errors(error.status_code, str(error.detail), headers=error.headers)


def _dalkit(request: Request, error: Exception, status: int) -> Response:
    if isinstance(error, NotFoundError):
        return errors(status, f"{error.model} not found")
    if isinstance(error, UniqueViolationError):
        return errors(status, "has already been taken")
    detail, extra = error_detail(error, status)
    if isinstance(error, QueryInputError) and error.allowed:
        detail = f"{detail}; allowed: {', '.join(extra['allowed'])}"
    return errors(status, detail)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    # the spec knows no 409: a duplicate username or email is a validation error
    install_error_handlers(app, status={UniqueViolationError: 422}, render=_dalkit)
