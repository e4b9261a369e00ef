"""WAL positions (LSNs) as the replica router and its tokens use them: ``"16/B374D848"`` as
PostgreSQL prints one, parsed into an integer that compares with others, and back.
"""

from __future__ import annotations

import re

from dalkit.errors import ConfigurationError

__all__ = ["format_lsn", "parse_lsn", "token_position"]

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    """A WAL position (a replica token) as one integer.

    Args:
        text: A position as PostgreSQL prints it, such as ``"16/B374D848"``.

    Returns:
        The position as an integer, comparable with others.

    Raises:
        ConfigurationError: ``text`` is not a WAL position.

    Examples:
        ```python
        print(parse_lsn("1/10"))
        #> 4294967312
        ```
    """
    match = _LSN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"not a replica token (a WAL position such as 0/16B3748): {text!r}"
        )
    return (int(match[1], 16) << 32) + int(match[2], 16)


def token_position(token: str | None) -> int:
    """The position a ``read_your_writes()`` token asks for, checked with replicas or without.

    Args:
        token: A replica token; None or empty asks for nothing.

    Returns:
        The position as an integer, 0 for nothing.

    Raises:
        ConfigurationError: ``token`` is not a WAL position.
    """
    return 0 if token is None or token == "" else parse_lsn(token)


def format_lsn(value: int) -> str:
    """A WAL position as PostgreSQL prints it (the inverse of `parse_lsn()`).

    Args:
        value: The position as an integer.

    Returns:
        The position as text, such as ``"1/10"``.
    """
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
