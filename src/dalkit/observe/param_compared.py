"""What a bound parameter is compared with, read around it in SQL text whose literals and
comments are masked: the column or call before a comparison (``password = ?``), after it
(``? = password``, ``? = ANY(tokens)``), or the secret-looking name it is selected as
(``SELECT ? AS token``); the names that look secret are `dalkit.secret_names`' rule.
`dalkit.observe.param_columns` reads every parameter of a statement by it."""

from __future__ import annotations

import re

from dalkit.secret_names import SECRET_NAMES

__all__ = ["CAST", "IDENT", "NAME", "compared", "space_before", "word_before"]


IDENT = r'(?:[A-Za-z_][\w$]*|"(?:[^"]|"")*")'
NAME = rf"{IDENT}(?:\s*\.\s*{IDENT})*"
#: a PostgreSQL cast after a parameter: $1::INTEGER, %(p)s::VARCHAR(20)[]
CAST = r"(?:::\w+(?:\(\d+(?:\s*,\s*\d+)?\))?(?:\[\])*)?"
_NAMED = re.compile(r"%\(\w+\)s|(?<![\w:]):\w+")
# what follows a parameter: a comparison and the column or call it compares with, or the name
# it is selected as
_FOLLOWING = re.compile(
    rf"{CAST}\s*(?:(?:<>|!=|<=|>=|=|<|>)\s*(?P<column>{NAME})(?P<call>\s*\()?|AS\s+(?P<alias>{IDENT}))",
    re.IGNORECASE,
)


def compared(text: str, at: int, end: int, walk: bool) -> str:
    """What the parameter from ``at`` to ``end`` is compared with (``=``, ``<``, ``<>``, ...,
    ``[I]LIKE``, ``IN``), on either side: a column, or an expression naming a secret
    (``lower(t.api_key) = ?``, ``? = ANY(tokens)``); or the secret-looking name it is selected
    as. With ``walk``, through the calls and rows holding it, when that finds a secret (other
    values stay without a column, failing closed): ``password = crypt(?, password)``,
    ``(email, token) = (?, ?)``, and a call naming one, compared or not: ``coalesce(api_token,
    ?)``.

    Args:
        text: SQL, its literals and comments masked.
        at: Where the parameter starts.
        end: Where it ends.
        walk: Look through the calls and rows holding it.

    Returns:
        The column or expression; ``""`` for none.
    """
    for level in range(4):
        found = _compared_at(text, at) or _compared_after(text, end)
        if found:
            plain = level == 0 and not found.endswith(")")
            return found if plain or SECRET_NAMES.search(found) else ""
        opened = _enclosing(text, at) if walk else -1
        if opened < 0:
            return ""
        # from the call's name; from the "(" of a row or an IN list
        name = word_before(text, space_before(text, opened))
        at = name if text[name:opened].strip().upper() not in ("", "IN") else opened
        end = _closing(text, opened)
        call = text[at:end]
        if SECRET_NAMES.search(_NAMED.sub("?", call)):  # its names, not its parameters
            return call
    return ""


def _compared_after(text: str, end: int) -> str:
    """The column or call compared with what ends at ``end``, read forwards; or the name it is
    selected as when that looks secret (a type it is cast to says nothing: ``CAST(? AS
    TEXT)``)."""
    following = _FOLLOWING.match(text, end)
    if following is None:
        return ""
    if following.group("alias") is not None:
        alias = following.group("alias").strip('"')
        return alias if SECRET_NAMES.search(alias) else ""
    if following.group("call") is not None:  # ANY(tokens), lower(api_key): its names tell
        opened = following.end() - 1
        return text[following.start("column") : _closing(text, opened)]
    return following.group("column").strip('"')


def _compared_at(text: str, at: int) -> str:
    """The column or expression compared with what starts at ``at``, read backwards: 1.0 us a
    parameter, where a pattern searched for before it took 18.6 (timeit, a SELECT)."""
    end = space_before(text, at)
    if end and text[end - 1] in "=<>":
        end -= 1
        if end and text[end - 1] in "<>!":
            end -= 1
    else:
        start = word_before(text, end)
        if (
            text[start:end].upper() not in ("LIKE", "ILIKE", "IN")
            or not text[start - 1 : start].isspace()
        ):
            return ""
        end = space_before(text, start)
        if text[word_before(text, end) : end].upper() == "NOT":
            end = space_before(text, word_before(text, end))
    end = space_before(text, end)
    if text[end - 1 : end] == ")":  # a call or a row: its names tell
        opened = _enclosing(text, end - 1)
        return "" if opened < 0 else text[word_before(text, opened) : end]
    return text[word_before(text, end) : end].strip('"')


_REACH = 400  # how far a parameter's enclosing parentheses are looked for


def _closing(text: str, opened: int) -> int:
    """Where the parenthesis opened at ``opened`` closes, or `_REACH` characters on."""
    depth = 0
    for i in range(opened, min(opened + _REACH, len(text))):
        mark = text[i]
        if mark == "(":
            depth += 1
        elif mark == ")":
            depth -= 1
            if not depth:
                return i + 1
    return min(opened + _REACH, len(text))


def _enclosing(text: str, at: int) -> int:
    """Where the parenthesis enclosing ``at`` opens, within `_REACH` characters; -1 if none."""
    depth = 0
    for i in range(at - 1, max(at - _REACH, 0) - 1, -1):
        mark = text[i]
        if mark == ")":
            depth += 1
        elif mark == "(":
            if not depth:
                return i
            depth -= 1
    return -1


def space_before(text: str, end: int) -> int:
    while end and text[end - 1].isspace():
        end -= 1
    return end


def word_before(text: str, end: int) -> int:
    """Where the name (letters, digits, ``_``, ``"``) ending at ``end`` starts."""
    while end and (text[end - 1].isalnum() or text[end - 1] in '_"'):
        end -= 1
    return end
