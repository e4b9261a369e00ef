"""SQL text as sqlparse tokens, for the guards that must understand raw SQL (the audit's,
`dalkit.audit.raw`, and tenant scoping's, `.tenant_guard`): the tokens that are code (no
whitespace, no comments), the identifier a token names, and the tables a statement writes."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import sqlparse
from sqlparse import tokens as T

__all__ = ["code_tokens", "identifier", "written_tables"]

# the keyword that starts a write, and the words that may stand between it and its table
_WRITES = {"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "REPLACE", "COPY"}
_FILLERS = {"INTO", "FROM", "ONLY", "TABLE", "OR", "IGNORE", "ABORT", "FAIL", "ROLLBACK"}
_FILLERS |= {"REPLACE"}


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


@functools.lru_cache(maxsize=1024)
def written_tables(sql: str) -> tuple[tuple[str | None, str], ...]:
    """``(schema, table)`` of every table that ``sql`` inserts into, updates, deletes from,
    merges into, truncates or copies into, CTEs included; names unquoted (unquoted ones in
    lower case). Cached by text: sqlparse's parse costs about a millisecond, and applications
    run the same few statements again and again (the bank test ran 3x slower without it)."""
    tokens = list(code_tokens(sql))
    found: list[tuple[str | None, str]] = []
    for index, token in enumerate(tokens):
        word = str(token.value).upper()
        if token.ttype not in T.Keyword and token.ttype not in T.DML and token.ttype not in T.DDL:
            continue
        if word not in _WRITES:
            continue
        position = index + 1
        while position < len(tokens) and str(tokens[position].value).upper() in _FILLERS:
            position += 1
        if word == "UPDATE" and index > 0 and str(tokens[index - 1].value).upper() in ("DO", "FOR"):
            continue  # ON CONFLICT DO UPDATE, SELECT ... FOR UPDATE: no table follows
        if position >= len(tokens) or (
            tokens[position].ttype in T.Keyword and not _is_name(tokens, position)
        ):
            continue
        while True:
            position = _take_name(tokens, position, found)
            # TRUNCATE a, ONLY b: a list of tables
            if word != "TRUNCATE" or position >= len(tokens) or tokens[position].value != ",":
                break
            position += 1
            while position < len(tokens) and str(tokens[position].value).upper() in _FILLERS:
                position += 1
    return tuple(found)


def _take_name(
    tokens: list[sqlparse.sql.Token], position: int, found: list[tuple[str | None, str]]
) -> int:
    """Append the (schema, name) at ``position`` to ``found``; the position after it."""
    first = identifier(tokens[position]) if position < len(tokens) else None
    if first is None:
        return position + 1
    if position + 2 < len(tokens) and tokens[position + 1].value == ".":
        second = identifier(tokens[position + 2])
        if second is not None:
            found.append((first, second))
            return position + 3
    found.append((None, first))
    return position + 1


def _is_name(tokens: list[sqlparse.sql.Token], position: int) -> bool:
    # a keyword used as a table name ("user") is followed by what follows a table
    following = tokens[position + 1].value if position + 1 < len(tokens) else ""
    return str(following).upper() in ("", "SET", "(", "VALUES", "WHERE", "AS", ".", "SELECT")
