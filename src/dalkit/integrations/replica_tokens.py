"""Read-your-writes across requests: the replica token a committing request gives its client
(in a cookie or a header), and reads back from the client's next request."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any, Literal

from dalkit.errors import ConfigurationError

__all__ = ["DEFAULT_COOKIE", "DEFAULT_HEADER", "ReplicaTokens", "TokenCarrier"]

log = logging.getLogger("dalkit.web")

TokenCarrier = Literal["cookie", "header"]
#: the cookie that carries the token by default (``read_your_writes="cookie"``)
DEFAULT_COOKIE = "dalkit_lsn"
#: the header that carries the token by default, both ways (``read_your_writes="header"``)
DEFAULT_HEADER = "x-dalkit-lsn"
# a WAL position as PostgreSQL prints it; anything else a client sends is ignored
_TOKEN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token


class ReplicaTokens:
    """Where a request's replica token travels: ``carrier`` is ``"cookie"`` or ``"header"``,
    ``name`` that cookie's or header's name.

    Args:
        carrier: ``"cookie"`` (set with ``Set-Cookie``, sent back by browsers on their own) or
            ``"header"`` (the response header a client must copy into its next requests).
        name: the cookie's or header's name; ``dalkit_lsn`` or ``x-dalkit-lsn`` when None.

    Raises:
        ConfigurationError: for another carrier, or a name that cannot be a header or cookie name.
    """

    def __init__(self, carrier: TokenCarrier, name: str | None = None) -> None:
        if carrier not in ("cookie", "header"):
            raise ConfigurationError(
                f"read_your_writes must be 'cookie', 'header' or None, not {carrier!r}"
            )
        name = name or (DEFAULT_COOKIE if carrier == "cookie" else DEFAULT_HEADER)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigurationError(f"not a usable cookie or header name: {name!r}")
        self.carrier = carrier
        self.name = name
        self._header = name.lower().encode("latin-1")

    def read(self, scope: MutableMapping[str, Any]) -> str | None:
        """The token a request carries.

        Args:
            scope: the request's ASGI scope.

        Returns:
            The token, or None: also for a malformed one, which a client may send at will (it
            is ignored, never an error).
        """
        for key, value in scope.get("headers", ()):
            if self.carrier == "header" and key == self._header:
                return _valid(bytes(value).decode("latin-1"))
            if self.carrier == "cookie" and key == b"cookie":
                found = _cookie(bytes(value).decode("latin-1"), self.name)
                if found is not None:
                    return _valid(found)
        return None

    def give(
        self, scope: MutableMapping[str, Any], message: MutableMapping[str, Any], token: str
    ) -> MutableMapping[str, Any]:
        """A response's start with the token added to its headers.

        Args:
            scope: the request's ASGI scope (``Secure`` cookies over HTTPS).
            message: the ``http.response.start`` message, left unchanged.
            token: the replica token to give.

        Returns:
            A copy of ``message`` with the cookie or header added.
        """
        if self.carrier == "header":
            header = (self._header, token.encode("latin-1"))
        else:
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            cookie = f"{self.name}={token}; Path=/; HttpOnly; SameSite=Lax{secure}"
            header = (b"set-cookie", cookie.encode("latin-1"))
        return {**message, "headers": [*message.get("headers", ()), header]}


def _cookie(header: str, name: str) -> str | None:
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"')
    return None


def _valid(token: str) -> str | None:
    token = token.strip()
    if _TOKEN.fullmatch(token):
        return token
    log.debug("ignored a malformed replica token (%d characters)", len(token))
    return None
