"""RFC 9457 problem details (``application/problem+json``) as plain bytes and dicts, so the
pure ASGI middleware can send one without Starlette."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from dalkit.errors import CommitOutcomeUnknownError

__all__ = ["PROBLEM_JSON", "commit_problem", "problem", "problem_headers", "problem_json"]

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """A problem document: ``type`` about:blank and the status' phrase as ``title``.

    Args:
        status: the HTTP status.
        detail: the sentence for the client, if any.
        **extra: members after the standard ones (such as ``allowed``).

    Returns:
        The document as a dict.
    """
    body: dict[str, Any] = {"type": "about:blank", "title": _phrase(status), "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return body


def problem_json(status: int, detail: str | None = None, **extra: Any) -> bytes:
    """[`problem`][dalkit.integrations.problems.problem] encoded as compact UTF-8 JSON.

    Args:
        status: the HTTP status.
        detail: the sentence for the client, if any.
        **extra: members after the standard ones.

    Returns:
        The encoded document.
    """
    return json.dumps(problem(status, detail, **extra), separators=(",", ":")).encode()


def commit_problem(error: BaseException) -> bytes:
    """The 500 that replaces a response whose transaction failed to commit.

    Args:
        error: what the commit raised.

    Returns:
        The encoded document: a client may retry when nothing was saved, and must check first
        when the connection broke during COMMIT (it may have committed).
    """
    if isinstance(error, CommitOutcomeUnknownError):
        return problem_json(
            500,
            "the connection to the database broke while the changes of this request were "
            "being saved: whether they were saved is unknown",
            outcome="unknown",
        )
    return problem_json(500, "the changes of this request could not be saved")


def problem_headers(body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """ASGI response headers for a problem+json ``body``.

    Args:
        body: the encoded document.
        *extra: more headers, as ``(name, value)`` bytes.

    Returns:
        The headers, content type and length first.
    """
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
