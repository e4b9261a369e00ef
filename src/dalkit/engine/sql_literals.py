"""The string literals and comments of SQL text, found by one scanner for all that reads SQL as
text: what an observer shows of a statement (its shape, the slow-query log, a budget's error)
never holds a string literal, which may be a secret written into raw SQL (``ALTER ROLE app
PASSWORD '...'``) or a value SQLAlchemy rendered inline (``literal_execute``), nor the text of a
comment, which may carry one too (``/* token=... */``, a tracing comment's request id); and the
text of one calls no function (`dalkit.engine.sql_calls`: ``'f(x)'``).

PostgreSQL's and SQLite's forms are recognised: ``'...'`` (``''`` inside), ``E'...'`` with
backslash escapes, and dollar quoting (``$$...$$``, ``$tag$...$tag$``), PostgreSQL's alone: in
SQLite's text (a `SQLiteText`, from `as_read_by`) ``$p$`` is a parameter; the prefixes of
``E'...'``, ``U&'...'``, ``B'...'`` and ``X'...'`` stay, their quoted part is masked. Comments
and quoted identifiers are skipped whole, so an apostrophe in them (``-- it's``, ``"it's"``)
cannot pair with a literal's quote and leave its text outside the mask. A block comment nested
as PostgreSQL reads it (``/* a /* b */ c */``) is one; one whose nesting never closes ends at
its first ``*/`` (SQLite's comments do not nest), and one left open runs to the end. SQLite's
statements are read as SQLite does once `sqlite_comments` took the nesting out of them.

A regular expression, not sqlparse: this runs on the text of each new statement an observer
sees, and sqlparse's lexer took 219 us to this scan's 2.7 for a 200-character SELECT (timeit).
"""

from __future__ import annotations

import re

__all__ = [
    "COMMENT_MASK",
    "MASK",
    "SQLiteText",
    "as_read_by",
    "mask_strings",
    "shown_sql",
    "sqlite_comments",
]

#: what a masked string literal reads as
MASK = "'***'"
#: what a comment reads as in what is shown of a statement (`shown_sql`)
COMMENT_MASK = "/* *** */"

# One group around alternatives that each start with a character of their own: the regex engine
# then passes over the characters that start none in a C loop (8.5 to 2.9 us for a 200-character
# SELECT with one literal, timeit). E'...' is matched from its quote, the E looked behind for,
# and stays. The quoted forms are unrolled ('[^']*(?:''[^']*)*' rather than '(?:[^']|'')*',
# the same text matched): a run of plain characters is one step, not an alternation per
# character. Together, the scan of a 2.2 MB INSERT of 120,000 string literals: 82 to 32 ms
# (timeit); a piece is a literal when it opens with $ or '
_PIECES_PATTERN = r"""(
        --[^\n]* | /\*(?:[\s\S]*?\*/|[\s\S]*) | "[^"]*(?:""[^"]*)*"
      | DOLLAR
      | '(?: (?<=(?<!\w)[eE]')[^'\\]*(?:(?:\\[\s\S]|'')[^'\\]*)*' | [^']*(?:''[^']*)*' )
    )"""
_DOLLAR_QUOTE = r"\$(?P<tag>(?:[A-Za-z_]\w*)?)\$[\s\S]*?\$(?P=tag)\$"
_PIECES = re.compile(_PIECES_PATTERN.replace("DOLLAR", _DOLLAR_QUOTE), re.VERBOSE)
# SQLite has no dollar quoting: there "$p$ ... $p$" is two parameters named "p$" (a "$" is
# part of a name), which read as a literal hid the code between them from the maskers, a
# "password = $pw" in it included. The tag's group stays, never matching, for split()
_SQLITE_PIECES = re.compile(_PIECES_PATTERN.replace("DOLLAR", "(?P<tag>(?!))"), re.VERBOSE)
#: what _PIECES.split() gives for each match: the piece, then its dollar quote's tag
_GROUPS = 2


class SQLiteText(str):
    """SQL text run on SQLite (what `as_read_by` gives for it): the maskers here read it as
    SQLite does, a ``$`` opening no dollar-quoted literal (PostgreSQL's syntax alone)."""

    __slots__ = ()


def _pieces_of(statement: str) -> re.Pattern[str]:
    return _SQLITE_PIECES if isinstance(statement, SQLiteText) else _PIECES


#: the characters a string literal's piece opens with (a comment's or an identifier's: -/")
_LITERAL_OPENS = "$'"
_COMMENT_OPENS = "-/"


def mask_strings(
    statement: str,
    mask: str = MASK,
    keep: re.Pattern[str] | None = None,
    comments: str | None = None,
) -> str:
    """``statement`` with each string literal replaced by ``mask``.

    Args:
        statement: SQL text.
        mask: What a literal becomes.
        keep: Literals this matches (from their opening quote on) stay.
        comments: What a comment (``-- ...``, ``/* ... */``) becomes; None keeps it.

    Returns:
        The text, its identifiers (and comments, unless ``comments`` is given) as they were.

    Examples:
        ```python
        from dalkit.engine.sql_literals import mask_strings

        print(mask_strings("ALTER ROLE app PASSWORD $$it's$$ -- o'clock"))
        #> ALTER ROLE app PASSWORD '***' -- o'clock
        ```
    """
    pieces_re = _pieces_of(statement)  # before _unnested, whose text is a plain str
    if _may_nest(statement):
        statement = _unnested(statement, pieces_re)
    commented = comments is not None and ("--" in statement or "/*" in statement)
    if "'" not in statement and "$" not in statement and not commented:
        return statement
    if keep is None:
        # no Python function call per literal: split() gives the text between the pieces and
        # each piece (with the scan above, the 2.2 MB INSERT: 88 to 40 ms, timeit)
        parts = pieces_re.split(statement)
        step = _GROUPS + 1
        comment, drop = ("", "") if comments is None else (comments, _COMMENT_OPENS)
        pieces = [
            mask if piece[0] in _LITERAL_OPENS else comment if piece[0] in drop else piece
            for piece in parts[1::step]
        ]
        joined: list[str] = [""] * (len(parts) // step * 2 + 1)
        joined[0::2] = parts[0::step]
        joined[1::2] = pieces
        return "".join(joined)

    def replace(m: re.Match[str]) -> str:
        if m.group(0)[0] in _LITERAL_OPENS and keep.match(statement, m.start()):
            return m.group(0)
        return _masked(m.group(0), mask, comments)

    return pieces_re.sub(replace, statement)


def _masked(piece: str, mask: str, comments: str | None) -> str:
    """What a piece of `_PIECES` becomes: a literal ``mask``, a comment ``comments`` (unless
    None), an identifier itself."""
    if piece[0] in _LITERAL_OPENS:
        return mask
    if comments is not None and piece[0] in _COMMENT_OPENS:
        return comments
    return piece


def shown_sql(statement: str, chars: int) -> str:
    """What a log or an error shows of ``statement``: its first ``chars`` characters once its
    literals and comments are masked and its whitespace collapsed. Only as much of the text is
    scanned as that needs: masking all of a 2 MB statement of 50,000 literals to show 2,000
    characters of it took 250 ms.

    Args:
        statement: SQL text.
        chars: At most this many characters are shown.

    Returns:
        The start of ``" ".join(mask_strings(statement, comments=COMMENT_MASK).split())``,
        ``chars`` long at most.
    """
    pieces_re = _pieces_of(statement)
    if _may_nest(statement):
        statement = _unnested(statement, pieces_re)
    reach = chars
    while True:
        head, whole = _masked_head(statement, reach, pieces_re)
        shown = " ".join(head.split())
        # cut anywhere, the head reads as the whole text does up to the cut: the scan below
        # finds the literals as a scan of the whole text finds them
        if whole or len(shown) >= chars:
            return shown[:chars]
        reach *= 4  # its whitespace collapsed or its literals masked to less than that


def _masked_head(statement: str, chars: int, pieces_re: re.Pattern[str]) -> tuple[str, bool]:
    """The first ``chars`` characters (or more) of ``mask_strings(statement)`` with its comments
    masked, and whether they are all of it."""
    pieces: list[str] = []
    size = at = 0
    for match in pieces_re.finditer(statement):  # lazily: stops with the scan
        start = match.start()
        if size + start - at >= chars:
            break
        piece = _masked(match.group(0), MASK, COMMENT_MASK)
        pieces += (statement[at:start], piece)
        size += start - at + len(piece)
        at = match.end()
        if size >= chars:
            return "".join(pieces), at >= len(statement)
    rest = statement[at : at + chars - size]  # no literal starts in it
    return "".join(pieces) + rest, at + len(rest) >= len(statement)


def as_read_by(dialect: str, statement: str) -> str:
    """``statement`` for the maskers here, as the database ``dialect`` names reads it: SQLite's
    by `sqlite_comments`, as a `SQLiteText` (no dollar quoting), any other's (PostgreSQL's) as
    it is.

    Args:
        dialect: The dialect's name (``"sqlite"``, ``"postgresql"``).
        statement: SQL text run there.

    Returns:
        The text.
    """
    return SQLiteText(sqlite_comments(statement)) if dialect == "sqlite" else statement


def sqlite_comments(statement: str) -> str:
    """``statement`` as SQLite reads its comments, for the maskers here, which read
    PostgreSQL's nesting: each ``/*`` inside a block comment broken apart (``/ *``), so that
    the comment ends at its first ``*/``, as in SQLite. Read as PostgreSQL's, ``SELECT 1 /* a
    /* b */, password = ? -- */`` is all comment from ``/* a`` on, and the code after the
    ``*/`` was masked with it: its parameter then named no column, its value unmasked in the
    slow-query log. Only the text of comments changes, which no mask shows.

    Args:
        statement: SQL text run on SQLite.

    Returns:
        The text, each block comment holding no ``/*``.
    """
    if not _may_nest(statement):  # in C: the common case
        return statement
    # the scan ends a block comment at its first */, as SQLite does; literals are skipped
    return _SQLITE_PIECES.sub(
        lambda m: "/*" + m[0][2:].replace("/*", "/ *") if m[0].startswith("/*") else m[0],
        statement,
    )


def _may_nest(statement: str) -> bool:
    """Whether a ``/*`` comes before the ``*/`` that would end an earlier one (literals not
    told apart: a quick look, in C, before `_unnested`'s scan)."""
    opens = statement.find("/*")
    while opens >= 0:
        closes = statement.find("*/", opens + 2)
        inner = statement.find("/*", opens + 2)
        if closes < 0 or 0 <= inner < closes:
            return closes >= 0
        opens = statement.find("/*", closes + 2)
    return False


def _unnested(statement: str, pieces_re: re.Pattern[str]) -> str:
    """``statement`` with each block comment that nests as PostgreSQL reads it (``/* a /* b */
    c */``: one comment) made one that does not, its inner ``/*`` and ``*/`` broken apart, so
    that the scan takes it whole. One whose nesting never closes is left to the scan, which
    ends it at its first ``*/`` as SQLite does (where comments do not nest)."""
    pieces: list[str] = []
    at = 0
    while (match := pieces_re.search(statement, at)) is not None:
        start, end = match.span()
        if statement.startswith("/*", start) and "/*" in match.group(0)[2:]:
            closed = _nested_end(statement, start)
            if closed is not None:
                inner = statement[start + 2 : closed - 2]
                inner = inner.replace("/*", "/ *").replace("*/", "* /")
                pieces += (statement[at:start], "/*", inner, "*/")
                at = closed
                continue
        pieces.append(statement[at:end])
        at = end
    pieces.append(statement[at:])
    return "".join(pieces)


def _nested_end(statement: str, start: int) -> int | None:
    """Where the block comment opening at ``start`` ends when comments nest, or None when its
    nesting never closes."""
    depth = 0
    at = start
    while True:
        opens, closes = statement.find("/*", at), statement.find("*/", at)
        if closes < 0:
            return None
        if 0 <= opens < closes:
            depth, at = depth + 1, opens + 2
        else:
            depth, at = depth - 1, closes + 2
            if depth == 0:
                return at
