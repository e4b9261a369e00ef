"""SQL text as sqlparse tokens, for the guards that must understand raw SQL (the audit's,
`dalkit.audit.raw`, and tenant scoping's, `.tenant_guard`): the tokens that are code (no
whitespace, no comments) and the identifier a token names."""

from __future__ import annotations

from collections.abc import Iterator

import sqlparse
from sqlparse import tokens as T

__all__ = ["code_tokens", "identifier"]


def code_tokens(sql: str) -> Iterator[sqlparse.sql.Token]:
    """Every token of ``sql`` that is code: no whitespace, no comment.

    Args:
        sql: One or more SQL statements.
    """
    for statement in sqlparse.parse(sql):
        for token in statement.flatten():  # type: ignore[no-untyped-call]
            if not token.is_whitespace and token.ttype not in T.Comment:
                yield token


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
