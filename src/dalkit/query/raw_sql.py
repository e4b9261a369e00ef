"""Raw SQL done safely: named bound parameters only. No I/O.

:func:`checked_text` refuses the shapes string-built SQL leaves behind: positional or
driver-style placeholders (``?``, ``%s``, ``$1``), unformatted templates (``{name}``), more than
one statement, and parameters that the text does not use or uses without being given. String
literals, quoted identifiers and comments are skipped, so ``'50%s'`` or ``'{a}'`` inside quotes
are fine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from dalkit.errors import InvalidQueryError

__all__ = ["checked_text"]

# literals, quoted identifiers and comments: skipped before looking for placeholders
_SKIPPED = re.compile(
    r"""
      '(?:[^']|'')*'                  # 'string', with '' escapes (also the body of E'...')
    | "(?:[^"]|"")*"                  # "quoted identifier"
    | \$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$   # $$dollar quoted$$ / $tag$...$tag$
    | --[^\n]*                        # -- line comment
    | /\*.*?\*/                       # /* block comment */
    """,
    re.VERBOSE | re.DOTALL,
)
_NAMED = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # SQLAlchemy text()'s own rule
_FORBIDDEN = [
    (re.compile(r"%(\(\w+\))?s(?!\w)"), "%s-style placeholder"),
    (re.compile(r"\$\d+"), "$1-style placeholder"),
    (re.compile(r"\?"), "? placeholder (for PostgreSQL's jsonb ? operator use jsonb_exists())"),
    (re.compile(r"\{\w*\}"), "unformatted {template} field"),
    (re.compile(r";\s*\S"), "second statement"),
]
MAX_SQL_LENGTH = 100_000


def checked_text(statement: object, params: Mapping[str, Any]) -> sa.TextClause:
    """``statement`` as a SQLAlchemy ``text()`` after the checks above; raises
    InvalidQueryError naming what it found."""
    if not isinstance(statement, str):
        raise InvalidQueryError(
            f"SQL must be a str, got {type(statement).__name__}", name=repr(statement)[:80]
        )
    if len(statement) > MAX_SQL_LENGTH or "\x00" in statement:
        raise InvalidQueryError("SQL is too long or holds a NUL character", name=statement[:80])
    code = _SKIPPED.sub(" ", statement)
    for pattern, what in _FORBIDDEN:
        found = pattern.search(code)
        if found:
            raise InvalidQueryError(
                f"raw SQL may only use :named bound parameters; found a {what}: {found.group(0)!r}",
                name=found.group(0),
                allowed=(":name",),
            )
    used = set(_NAMED.findall(code))
    missing = sorted(used - set(params))
    unused = sorted(set(params) - used)
    if missing or unused:
        problem = (
            f"missing values for {missing}" if missing else f"parameters not in the SQL: {unused}"
        )
        raise InvalidQueryError(
            f"raw SQL parameters do not match: {problem}",
            name=",".join(missing or unused),
            allowed=sorted(used),
        )
    return sa.text(statement)
