"""Opaque, tamper-evident keyset cursors: the sort values of a boundary row, signed with
HMAC-SHA256. No I/O.

The key is random per process unless a repository sets ``cursor_secret`` (needed when several
processes serve the same API). A cursor names its version, model and sort order, so one made for
another model or order is refused rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from typing import Any

from dalkit.errors import InvalidCursorError
from dalkit.query.fields import CoercionError
from dalkit.query.sorting import SortKey

__all__ = ["CursorCodec"]

_VERSION = 1
_PROCESS_KEY = secrets.token_bytes(32)
#: longer strings are refused before any decoding work
MAX_CURSOR_LENGTH = 4096


class CursorCodec:
    """Encodes and verifies cursors for one model."""

    def __init__(self, scope: str, secret: bytes | str | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and len(secret) < 16:
            raise ValueError("cursor_secret must be at least 16 bytes long")
        self._key = hashlib.sha256(b"dalkit-cursor\x00" + (secret or _PROCESS_KEY)).digest()
        self._scope = scope.encode()

    def encode(self, keys: Sequence[SortKey], entity: Any) -> str:
        """A cursor pointing at ``entity``'s position in the order ``keys``."""
        values = [key.field.to_json(getattr(entity, key.field.name)) for key in keys]
        payload = json.dumps(
            [_VERSION, _signature(keys), values], separators=(",", ":"), ensure_ascii=True
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, cursor: object, keys: Sequence[SortKey]) -> tuple[Any, ...]:
        """The sort values in ``cursor``, coerced; raises InvalidCursorError for anything else."""
        if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
            raise _invalid(cursor, "not a cursor string")
        body, dot, mac = cursor.partition(".")
        payload, signature = _unb64(body), _unb64(mac)
        if not dot or payload is None or signature is None:
            raise _invalid(cursor, "malformed")
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise _invalid(cursor, "signature does not match: forged, altered or from another key")
        try:
            version, sort, values = json.loads(payload)
        except (ValueError, TypeError):
            raise _invalid(cursor, "malformed payload") from None
        if version != _VERSION:
            raise _invalid(cursor, f"unsupported cursor version {version!r}")
        if sort != _signature(keys) or not isinstance(values, list) or len(values) != len(keys):
            raise _invalid(cursor, f"made for another sort order than {_signature(keys)!r}")
        try:
            coerced = tuple(key.field.coerce(v) for key, v in zip(keys, values, strict=True))
        except CoercionError as exc:
            raise _invalid(cursor, str(exc)) from None
        if any(value is None for value in coerced):
            raise _invalid(cursor, "holds a null sort value")
        return coerced

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, self._scope + b"\x00" + payload, hashlib.sha256).digest()


def _signature(keys: Sequence[SortKey]) -> str:
    return ",".join(key.token for key in keys)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        # validate=True: characters outside the alphabet are an error, not silently skipped
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None


def _invalid(cursor: object, reason: str) -> InvalidCursorError:
    shown = cursor if isinstance(cursor, str) else repr(cursor)
    return InvalidCursorError(f"invalid cursor: {reason}", name=shown[:200], allowed=())
