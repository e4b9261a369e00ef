"""LIKE patterns: parsed from user input into tokens, rendered for SQL (LIKE, or SQLite's
GLOB), and evaluated in Python (the in-memory repository), in time linear in the text
for a given pattern: no backtracking over ``%``. No I/O.

Case: ``like`` is case-sensitive and ``ilike`` (and ``search``) folds ASCII letters only, which
is what dalkit's SQL does on SQLite (LIKE, and GLOB for case-sensitive matching) and what
PostgreSQL's ILIKE does under the C locale. Under another PostgreSQL locale (``en_US.UTF-8``)
ILIKE also folds non-ASCII letters, so ``'É' ILIKE 'é'`` holds there and not here nor on
SQLite; no Python rule reproduces every collation, so the portable behaviour is the ASCII one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import sqlalchemy as sa

from dalkit.query.fields import CoercionError

__all__ = [
    "ANY_CHAR",
    "ANY_STRING",
    "PATTERN_TYPE",
    "SQL_ESCAPE",
    "like_matches",
    "parse_like",
    "render_glob",
    "render_like",
]

#: pattern tokens: ``%`` and ``_``; every other token is one literal character
ANY_STRING, ANY_CHAR = 0, 1
#: the ESCAPE character of rendered LIKE patterns
SQL_ESCAPE = "/"
#: the type a rendered pattern is bound as, whatever its column's (a CHAR(n)'s would pad it)
PATTERN_TYPE = sa.String()
_WILDCARDS = {"%": ANY_STRING, "_": ANY_CHAR}
_GLOB_SPECIAL = {"*": "[*]", "?": "[?]", "[": "[[]"}
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def like_matches(tokens: Sequence[str | int], text: str, *, fold_case: bool = False) -> bool:
    """Whether ``text`` matches the whole pattern ``tokens``.

    The pattern is split at its ``%`` into segments of fixed length; the first must match at the
    start, the last at the end, and each one between at its leftmost place after the previous
    one. Taking the leftmost place never loses a match, so nothing is ever retried.
    """
    if fold_case:
        text = text.translate(_ASCII_FOLD)
        tokens = [t.translate(_ASCII_FOLD) if isinstance(t, str) else t for t in tokens]
    segments = _segments(tokens)
    if len(segments) == 1:
        return len(segments[0]) == len(text) and _at(segments[0], text, 0)
    first, *middle, last = segments
    if not _at(first, text, 0):
        return False
    position = len(first)
    for segment in middle:
        found = _find(segment, text, position)
        if found < 0:
            return False
        position = found + len(segment)
    start = len(text) - len(last)
    return start >= position and _at(last, text, start)


def _segments(tokens: Sequence[str | int]) -> list[tuple[str | int, ...]]:
    segments: list[tuple[str | int, ...]] = []
    current: list[str | int] = []
    for token in tokens:
        if isinstance(token, int) and token == ANY_STRING:
            segments.append(tuple(current))
            current = []
        else:
            current.append(token)
    segments.append(tuple(current))
    return segments


def _at(segment: tuple[str | int, ...], text: str, start: int) -> bool:
    if start + len(segment) > len(text):
        return False
    return all(
        isinstance(token, int) or text[start + i] == token for i, token in enumerate(segment)
    )


def _find(segment: tuple[str | int, ...], text: str, start: int) -> int:
    """Leftmost index from ``start`` where ``segment`` matches, or -1."""
    if not segment:
        return start
    if all(isinstance(token, str) for token in segment):
        return text.find("".join(segment), start)  # type: ignore[arg-type]
    # literals and single-character wildcards only: a regex without repetition, which cannot
    # backtrack beyond the segment's own length
    found = _compiled(segment).search(text, start)
    return -1 if found is None else found.start()


@functools.lru_cache(maxsize=256)
def _compiled(segment: tuple[str | int, ...]) -> re.Pattern[str]:
    return re.compile(
        "".join("." if isinstance(t, int) else re.escape(t) for t in segment), re.DOTALL
    )


def parse_like(pattern: str) -> list[str | int]:
    """A LIKE pattern (``%``, ``_``, backslash escapes) as tokens: literal characters, and
    `ANY_STRING` / `ANY_CHAR` for the wildcards."""
    tokens: list[str | int] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise CoercionError("a LIKE pattern cannot end with the escape character \\")
            tokens.append(escaped)
        elif char in _WILDCARDS:
            tokens.append(_WILDCARDS[char])
        else:
            tokens.append(char)
    return tokens


def render_like(tokens: list[str | int]) -> str:
    out = []
    for token in tokens:
        if isinstance(token, int):
            out.append("%" if token == ANY_STRING else "_")
        elif token in ("%", "_", SQL_ESCAPE):
            out.append(SQL_ESCAPE + token)
        else:
            out.append(token)
    return "".join(out)


def render_glob(tokens: list[str | int]) -> str:
    out = []
    for token in tokens:
        if isinstance(token, int):
            out.append("*" if token == ANY_STRING else "?")
        else:
            out.append(_GLOB_SPECIAL.get(token, token))
    return "".join(out)
