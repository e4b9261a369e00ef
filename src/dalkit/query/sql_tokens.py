"""SQL text as sqlparse tokens, for the guards that must understand raw SQL (the audit's,
`dalkit.audit.raw`, and tenant scoping's, `.tenant_guard`): the tokens that are code (no
whitespace, no comments) and the identifier a token names."""

from __future__ import annotations

from collections.abc import Iterator

import sqlparse
from sqlparse import tokens as T

__all__ = ["code_tokens", "identifier"]


def code_tokens(sql: str) -> Iterator[sqlparse.sql.Token]:
    """Every token of ``sql`` that is code: no whitespace, no comment. The body of a
    PostgreSQL ``DO`` block, a dollar-quoted string to sqlparse, is code too: its statements
    run (``DO $$ BEGIN UPDATE t ...; END $$``), and a guard must see what they write.

    Args:
        sql: One or more SQL statements.
    """
    for statement in sqlparse.parse(sql):
        first = None
        for token in statement.flatten():  # type: ignore[no-untyped-call]
            if token.is_whitespace or token.ttype in T.Comment:
                continue
            if first is None:
                first = str(token.value).upper()
            body = _dollar_body(token) if first == "DO" else None
            if body is None:
                yield token
            else:
                yield from code_tokens(body)


def _dollar_body(token: sqlparse.sql.Token) -> str | None:
    """What a dollar-quoted string (``$$...$$``, ``$tag$...$tag$``) holds; None for any other
    token."""
    value = str(token.value)
    if token.ttype is not T.Literal or not value.startswith("$"):
        return None
    tag_end = value.find("$", 1)
    tag = value[: tag_end + 1]
    if tag_end < 0 or len(value) < 2 * len(tag) or not value.endswith(tag):
        return None
    return value[len(tag) : -len(tag)]


def identifier(token: sqlparse.sql.Token) -> str | None:
    """The name ``token`` stands for (unquoted names in lower case, a quoted one as written),
    or None when it names nothing (a string literal, a number, punctuation).

    Args:
        token: A token of `code_tokens`.
    """
    if token.ttype in T.Name or token.ttype is T.Keyword:
        return str(token.value).lower()
    if token.ttype in T.Literal.String.Symbol:  # "quoted identifier": case kept
        return str(token.value)[1:-1].replace('""', '"')
    return None
