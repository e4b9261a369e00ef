"""Raw SQL done safely: named bound parameters only, one statement. No I/O.

`checked_text()` tokenises with sqlparse, tuned to read quotes and comments the way
PostgreSQL and SQLite both do, then refuses what string-built SQL leaves behind: positional or
driver-style placeholders (``?``, ``%s``, ``$1``), ``{templates}``, a second statement, and
parameters the text does not use or uses without being given. ``:name`` inside a literal,
quoted identifier or comment is text, not a parameter. Strings are read with PostgreSQL's
default ``standard_conforming_strings = on`` (a backslash escapes only in ``E'...'``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlparse import keywords
from sqlparse import tokens as T
from sqlparse.lexer import Lexer

from dalkit.errors import InvalidQueryError

__all__ = ["bound_params", "checked_text", "sql_tokens"]

_NAMED = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # SQLAlchemy text()'s own rule
# inside quotes: what SQLAlchemy would bind (:name) or unescape (\:name); a backslash in
# front of either makes SQLAlchemy emit the text exactly as written
_COLON_TEXT = re.compile(r"\\:\w*(?![:\w])|(?<![:\w\\]):\w+(?!:)")
_FORBIDDEN = [
    (re.compile(r"%(\(\w+\))?s(?!\w)"), "a %s-style placeholder"),
    (re.compile(r"\$\d+"), "a $1-style placeholder"),
    (re.compile(r"\?"), "a ? placeholder (for PostgreSQL's jsonb ? operator use jsonb_exists())"),
    (re.compile(r"\{\w*\}"), "an unformatted {template} field"),
    # SQLite runs an unterminated comment to the end, PostgreSQL refuses it
    (re.compile(r"/\*"), "an unterminated /* comment"),
]
MAX_SQL_LENGTH = 100_000

# sqlparse's stock rules read MySQL as well, which would let text the database runs hide from
# the checks: `# ` starts no comment in PostgreSQL (it is XOR), a backslash does not escape a
# quote in a standard string ('a\' ends there), and [brackets] quote nothing in PostgreSQL.
# E'...' strings, where a backslash does escape, get their own rule.
_REPLACED = {
    r"(--|# )\+.*?(\r\n|\r|\n|$)": None,
    r"(--|# ).*?(\r\n|\r|\n|$)": r"--.*?(\r\n|\r|\n|$)",
    r"'(''|\\'|[^'])*'": r"'(''|[^'])*'",
    r'"(""|\\"|[^"])*"': r'"(""|[^"])*"',
    r'(""|".*?[^\\]")': None,
    r"(?<![\w\])])(\[[^\]\[]+\])": None,
}
_E_STRING = (r"E'(''|\\[\s\S]|[^'\\])*'", T.String.Single)


def _lexer() -> Any:
    lexer: Any = Lexer()  # sqlparse is untyped
    lexer.default_initialization()
    rules: list[tuple[str, Any]] = [_E_STRING]
    for pattern, kind in keywords.SQL_REGEX:
        replacement = _REPLACED.get(pattern, pattern)
        if replacement is not None:
            rules.append((replacement, kind))
    lexer.set_SQL_REGEX(rules)
    return lexer


_LEXER = _lexer()


def _is_text(kind: Any) -> bool:
    """Literals, quoted identifiers and comments: where a colon or semicolon is just text."""
    return kind in T.String or kind in T.Comment or kind is T.Literal


def sql_tokens(statement: str) -> Iterator[tuple[Any, str]]:
    """``(token type, text)`` pairs of ``statement``, as `checked_text()` reads them."""
    return iter(_LEXER.get_tokens(statement))


def checked_text(statement: object, params: Mapping[str, Any]) -> sa.TextClause:
    """``statement`` as a SQLAlchemy ``text()`` after the checks above; raises
    InvalidQueryError naming what it found."""
    if not isinstance(statement, str):
        raise InvalidQueryError(
            f"SQL must be a str, got {type(statement).__name__}", name=repr(statement)[:80]
        )
    if len(statement) > MAX_SQL_LENGTH or "\x00" in statement:
        raise InvalidQueryError("SQL is too long or holds a NUL character", name=statement[:80])
    code: list[str] = []
    rebuilt: list[str] = []
    ended = False
    for kind, text in sql_tokens(statement):
        if kind in T.Error and text in "'\"`":
            raise _refused(f"an unterminated quote {text}", text)
        if kind in T.Comment.Multiline and "/*" in text[2:]:
            # PostgreSQL nests block comments, SQLite does not: the two would end it elsewhere
            raise _refused("a nested /* block comment */", text[:80])
        if ended and not (kind in T.Whitespace or kind in T.Newline or kind in T.Comment):
            raise _refused("a second statement", text[:80])
        if kind in T.Punctuation and text == ";":
            ended = True
        if _is_text(kind):
            code.append(" ")
            rebuilt.append(_COLON_TEXT.sub(lambda m: "\\" + m.group(0), text))
        else:
            code.append(text)
            rebuilt.append(text)
    _check_placeholders("".join(code), params)
    return sa.text("".join(rebuilt))


def bound_params(given: object, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``db.sql(statement, given, **keywords)``: a mapping or keywords, as
    SQLAlchemy's ``execute(text(...), {...})`` takes the mapping; raises InvalidQueryError for
    anything else, or both at once (which would leave unclear which value wins)."""
    if given is None:
        return dict(keywords)
    how = "pass them as one mapping, db.sql(sql, {'name': value}), or as db.sql(sql, name=value)"
    if not isinstance(given, Mapping):
        # a tuple or list: positional values (or many rows), which :named placeholders cannot take
        kind = type(given).__name__
        raise InvalidQueryError(f"raw SQL parameters as a {kind}: {how}", name=kind)
    if keywords:
        raise InvalidQueryError(
            f"raw SQL parameters given both as a mapping and as keywords: {how}",
            name=",".join(sorted(keywords)),
        )
    names = [name for name in given if not isinstance(name, str)]
    if names:
        raise InvalidQueryError(
            f"raw SQL parameter names must be str, got {names[0]!r}: {how}", name=repr(names[0])
        )
    return dict(given)


def _check_placeholders(code: str, params: Mapping[str, Any]) -> None:
    for pattern, what in _FORBIDDEN:
        found = pattern.search(code)
        if found:
            raise _refused(what, found.group(0))
    used = set(_NAMED.findall(code))
    missing = sorted(used - set(params))
    unused = sorted(set(params) - used)
    if missing or unused:
        problem = (
            f"missing values for {missing}" if missing else f"parameters not in the SQL: {unused}"
        )
        cast = next((name for name in unused if f":{name}::" in code), None)
        if cast is not None:  # PostgreSQL's shorthand cast hides the name from text()
            problem += f" (:{cast}::type is not read as a parameter: write CAST(:{cast} AS type))"
        raise InvalidQueryError(
            f"raw SQL parameters do not match: {problem}",
            name=",".join(missing or unused),
            allowed=sorted(used),
        )


def _refused(what: str, found: str) -> InvalidQueryError:
    return InvalidQueryError(
        f"raw SQL may only be one statement with :named bound parameters; found {what}: {found!r}",
        name=found,
        allowed=(":name",),
    )
