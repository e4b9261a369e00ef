"""RFC 9457 problem details (``application/problem+json``) as plain bytes and dicts, so the
pure ASGI middleware can send one without Starlette."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

__all__ = ["PROBLEM_JSON", "problem", "problem_headers", "problem_json"]

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """A problem document: ``type`` about:blank, the status' phrase as ``title``, and
    ``extra`` members (such as ``allowed``) after the standard ones."""
    body: dict[str, Any] = {"type": "about:blank", "title": _phrase(status), "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return body


def problem_json(status: int, detail: str | None = None, **extra: Any) -> bytes:
    """:func:`problem` encoded as compact UTF-8 JSON."""
    return json.dumps(problem(status, detail, **extra), separators=(",", ":")).encode()


def problem_headers(body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """ASGI response headers for a problem+json ``body``."""
    return [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
