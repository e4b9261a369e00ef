"""The column the SQL text gives each bound parameter of a statement, and whether the statement
writes a column named like a secret: what the slow-query log masks a value by when the name of
its parameter says nothing (``exec_driver_sql``'s positional ones, a bind named ``pw``, the
rows of an insertmanyvalues batch, whose compiled names are those of one row).

A value stands for the column of the INSERT column list it is inserted into (each row of a
multi-row ``VALUES``, and SQLAlchemy's ``INSERT ... SELECT p0, p1 FROM (VALUES ...) AS
imp_sen(p0, p1, sen_counter)`` form), the column a ``SET`` assigns, the column of the ``IN``
list it is in, and the column it is compared with on either side (read by
`dalkit.observe.param_compared`). Patterns and a parenthesis matcher, not a
parser: string literals and comments are masked first, so a ``?`` inside one is no parameter;
what the patterns cannot place is left without a column, and the caller fails closed on it
(`writes_secret`). Run only for a statement being logged, never on the path of every one:
30 us for a SELECT of four parameters, where the patterns before this module took 100; 15 ms
for an insertmanyvalues batch of 1,000 rows, where they took 45 (timeit, best of five).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from typing import NamedTuple

from dalkit.engine.sql_literals import mask_strings
from dalkit.observe.param_compared import (
    CAST,
    IDENT,
    NAME,
    compared,
    space_before,
    word_before,
)
from dalkit.secret_names import SECRET_NAMES

__all__ = ["INSERT_TARGET", "ParameterColumns", "parameter_columns"]

# comments go, quoted identifiers stay (a column may be one); string literals are gone already
_COMMENTS = re.compile(r'"(?:[^"]|"")*"|--[^\n]*|/\*[\s\S]*?\*/')
# the lookahead first, as in dalkit.engine.sql_literals: 4.7 to 2.3 us (timeit, a
# 100-character SELECT of eight parameters). A "$" is part of a SQLite parameter's name ($p$ is
# bound from {"p$": ...})
_PLACEHOLDERS = re.compile(
    r"""(?=["%?$:@])(?:
        "(?:[^"]|"")*" | %%           # a quoted identifier, an escaped percent: no parameter
      | (?P<pos>\?|%s)                 # qmark, format
      | \$(?P<num>\d+)                 # numeric (asyncpg)
      | %\((?P<py>\w+)\)s              # pyformat (psycopg)
      | (?<![\w:]):(?P<colon>[A-Za-z_][\w$]*)   # named (sqlite3); not a ::cast
      | (?<![\w$@])[$@](?P<sigil>[A-Za-z_][\w$]*)   # sqlite3's other named forms: $name, @name
    )""",
    re.VERBOSE,
)
# INSERT INTO t (columns), INSERT INTO t without them; MERGE's INSERT (columns) and INSERT VALUES
INSERT_TARGET = re.compile(
    rf"\b(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO\s+{NAME}(?:\s+AS\s+{IDENT})?\s*(\()?"
    r"|\bINSERT\s*(\()|\bINSERT\s+(?=VALUES\b)",
    re.IGNORECASE,
)
_AFTER_COLUMNS = re.compile(
    r"\s*(?:OVERRIDING\s+\w+\s+VALUE\s*)?(?:(?P<values>VALUES)|SELECT(?:\s+ALL|\s+DISTINCT)?)\b",
    re.IGNORECASE,
)
_OPEN = re.compile(r"\s*\(")
_COMMA = re.compile(r"\s*,")
_FROM_OPEN = re.compile(r"\s*FROM\s*\(", re.IGNORECASE)
_VALUES = re.compile(r"\s*VALUES\b", re.IGNORECASE)
_ALIAS_OPEN = re.compile(rf"\s*(?:AS\s+)?{IDENT}\s*\(", re.IGNORECASE)
_BARE = re.compile(rf"\s*({IDENT})\s*(?:::[\s\S]*)?")  # p0, p0::VARCHAR
_SET = re.compile(r"\bSET\b", re.IGNORECASE)
_TARGET = re.compile(rf"\s*(\([^()]*\)|{NAME})\s*=(?!=)")
_STRUCTURE = re.compile(r'"(?:[^"]|"")*"|[(),]')
# where a SELECT list or a SET list ends, at its own depth (CASE ... END nests like
# parentheses: a MERGE's WHEN ends a SET list, a CASE's does not)
_LIST_TOKENS = re.compile(
    r'"(?:[^"]|"")*"|[(),;]|\b(?:CASE|END|FROM|WHERE|RETURNING|ON|ORDER|GROUP|HAVING|LIMIT'
    r"|OFFSET|UNION|INTERSECT|EXCEPT|WINDOW|INTO|FOR|WHEN|THEN|ELSE)\b",
    re.IGNORECASE,
)
_ONE = re.compile(rf"\s*(?:\?|%s|\$\d+|%\(\w+\)s|(?<![\w:]):\w+){CAST}\s*")  # $1::INTEGER
_IN_OPEN = re.compile(r"\bIN\s*\(", re.IGNORECASE)

#: ``(start, end, column)``: the parameters between start and end stand for column
_Regions = list[tuple[int, int, str]]


class ParameterColumns(NamedTuple):
    """What the text of a statement says of its parameters.

    Attributes:
        positional: Per positional parameter (``?`` and ``%s`` in their order, ``$n`` at
            n - 1), the columns the text gives it, space-separated; ``""`` for none.
        named: The same per named parameter (``%(name)s``, ``:name``), for those it names.
        writes_secret: The statement inserts into or assigns a column named like a secret,
            or inserts without naming its columns: a value the text gives no column may be
            that secret.
    """

    positional: list[str]
    named: dict[str, str]
    writes_secret: bool


def parameter_columns(statement: str) -> ParameterColumns:
    """The column each parameter of ``statement`` stands for, as far as its text says.

    Args:
        statement: SQL as sent to the driver.

    Returns:
        The columns, and whether the statement writes a secret-looking column.

    Examples:
        ```python
        from dalkit.observe.param_columns import parameter_columns

        found = parameter_columns("INSERT INTO u (email, password) VALUES (?, ?), (?, md5(?))")
        print(found.positional, found.writes_secret)
        #> ['email', 'password', 'email', 'password'] True
        ```
    """
    text = _COMMENTS.sub(_drop_comment, mask_strings(statement))
    regions = _in_lists(text)
    written: list[str] = []
    unlisted = _inserts(text, regions, written)
    _assignments(text, regions, written)

    matches = list(_PLACEHOLDERS.finditer(text))
    # one positional style a statement: a "?" beside $n or %s is PostgreSQL's jsonb operator
    marks = {m.group("pos") or "$" for m in matches if m.group("pos") or m.group("num")}
    style = next((mark for mark in ("$", "%s", "?") if mark in marks), "")
    starts: list[int] = []
    ends: list[int] = []
    keys: list[int | str] = []
    order = 0
    for m in matches:
        if m.group("num") is not None and style == "$":
            keys.append(int(m.group("num")) - 1)
        elif m.group("pos") is not None and m.group("pos") == style:
            keys.append(order)
            order += 1
        elif (name := m.group("py") or m.group("colon") or m.group("sigil")) is not None:
            keys.append(name)
        else:
            continue
        starts.append(m.start())
        ends.append(m.end())
    columns: list[list[str]] = [[] for _ in starts]
    # each region finds its parameters by bisection: an insertmanyvalues batch of a thousand
    # rows has thousands of both
    for start, end, column in regions:
        for i in range(bisect_left(starts, start), bisect_left(starts, end)):
            columns[i].append(column)
    for i, at in enumerate(starts):
        if other := compared(text, at, ends[i], walk=not columns[i]):
            columns[i].append(other)

    positional: dict[int, list[str]] = {}
    named: dict[str, list[str]] = {}
    for key, found in zip(keys, columns, strict=True):
        if isinstance(key, int):
            positional.setdefault(key, []).extend(found)
        else:
            named.setdefault(key, []).extend(found)
    count = max(positional) + 1 if positional else 0
    return ParameterColumns(
        [" ".join(dict.fromkeys(positional.get(n, ()))) for n in range(count)],
        {name: " ".join(dict.fromkeys(found)) for name, found in named.items() if found},
        unlisted or any(SECRET_NAMES.search(column) for column in written),
    )


def _drop_comment(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0).startswith('"') else " "


def _in_lists(text: str) -> _Regions:
    """A region for each ``column [NOT] IN (parameters)``: a list of parameters only, not of
    expressions or a subquery."""
    regions: _Regions = []
    for opened in _IN_OPEN.finditer(text):
        spans, _ = _elements(text, opened.end() - 1)
        if not spans or not all(_ONE.fullmatch(text, s, e) for s, e in spans):
            continue
        end = space_before(text, opened.start())
        if text[word_before(text, end) : end].upper() == "NOT":
            end = space_before(text, word_before(text, end))
        if column := text[word_before(text, end) : end].strip('"'):
            regions.append((spans[0][0], spans[-1][1], column))
    return regions


def _inserts(text: str, regions: _Regions, written: list[str]) -> bool:
    """Regions for the values of each INSERT; True when one names no columns."""
    unlisted = False
    for insert in INSERT_TARGET.finditer(text):
        listed = 1 if insert.group(1) is not None else 2
        if insert.group(listed) is None:
            unlisted = True
            continue
        spans, end = _elements(text, insert.start(listed))
        if end < 0:
            unlisted = True
            continue
        columns = [_column(text[start:stop]) for start, stop in spans]
        written.extend(columns)
        after = _AFTER_COLUMNS.match(text, end)
        if after is None:
            continue
        if after.group("values") is not None:
            _rows(text, after.end(), columns, regions)
        else:
            _select(text, after.end(), columns, regions)
    return unlisted


def _rows(text: str, at: int, targets: list[str], regions: _Regions) -> None:
    """Each row of a VALUES list from ``at``: its n-th value stands for ``targets[n]``."""
    while (row := _OPEN.match(text, at)) is not None:
        spans, at = _elements(text, row.end() - 1)
        if at < 0:
            return
        if len(spans) == len(targets):
            regions.extend((start, end, t) for (start, end), t in zip(spans, targets, strict=True))
        comma = _COMMA.match(text, at)
        if comma is None:
            return
        at = comma.end()


def _select(text: str, at: int, columns: list[str], regions: _Regions) -> None:
    """``INSERT ... SELECT``: the n-th item stands for the n-th column; and in SQLAlchemy's
    ``SELECT p0, p1 FROM (VALUES ...) AS imp_sen(p0, p1, sen_counter)`` a row's value stands
    for the column whose item names the alias column it fills."""
    items, end = _until(text, at)
    if len(items) != len(columns):
        return
    regions.extend((start, stop, c) for (start, stop), c in zip(items, columns, strict=True))
    named = {}
    for (start, stop), column in zip(items, columns, strict=True):
        if (bare := _BARE.fullmatch(text, start, stop)) is not None:
            named[_column(bare.group(1))] = column
    subquery = _FROM_OPEN.match(text, end)
    if subquery is None:
        return
    _, close = _elements(text, subquery.end() - 1)
    values = _VALUES.match(text, subquery.end())
    alias = _ALIAS_OPEN.match(text, close) if close >= 0 else None
    if values is None or alias is None:
        return
    names, _ = _elements(text, alias.end() - 1)
    _rows(text, values.end(), [named.get(_column(text[s:e]), "") for s, e in names], regions)


def _assignments(text: str, regions: _Regions, written: list[str]) -> None:
    """Regions for each ``SET a = ..., b = ...`` (UPDATE, ON CONFLICT DO UPDATE)."""
    for clause in _SET.finditer(text):
        items, _ = _until(text, clause.end())
        for start, stop in items:
            target = _TARGET.match(text, start, stop)
            if target is None:
                break
            written.append(target.group(1))
            regions.append((target.end(), stop, target.group(1)))


def _column(text: str) -> str:
    return " ".join(text.split()).replace('"', "")


def _elements(text: str, opened: int) -> tuple[list[tuple[int, int]], int]:
    """The spans of the comma-separated items in the parentheses opened at ``opened``, and
    where they close; ``([], -1)`` when they do not."""
    depth = 0
    begin = opened + 1
    spans: list[tuple[int, int]] = []
    for token in _STRUCTURE.finditer(text, opened):
        mark = token.group(0)
        if mark == "(":
            depth += 1
        elif mark == ")":
            depth -= 1
            if depth == 0:
                spans.append((begin, token.start()))
                return spans, token.end()
        elif mark == "," and depth == 1:
            spans.append((begin, token.start()))
            begin = token.end()
    return [], -1


def _until(text: str, at: int) -> tuple[list[tuple[int, int]], int]:
    """The spans of the comma-separated items from ``at`` to the end of their list (a clause
    keyword, a ``;`` or a parenthesis closed at their depth), and where it ends."""
    depth = 0
    begin = at
    spans: list[tuple[int, int]] = []
    end = len(text)
    for token in _LIST_TOKENS.finditer(text, at):
        mark = token.group(0).upper()
        if mark in ("(", "CASE"):
            depth += 1
        elif mark in (")", "END") and depth:
            depth -= 1
        elif depth or mark.startswith('"'):
            continue
        elif mark == ",":
            spans.append((begin, token.start()))
            begin = token.end()
        else:
            end = token.start()
            break
    spans.append((begin, end))
    return spans, end
