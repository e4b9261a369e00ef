"""The values PostgreSQL writes into a plan (``Filter: (password = 'hunter2'::text)``), masked
for `dalkit.observe.explain`: every string literal (`mask_strings`) but a number's
(``'100'::bigint``), and a number compared with a column named like a secret (`SECRET_NAMES`),
on either side of the comparison (``(pin = 1234)``, ``(1234 = pin)``)."""

from __future__ import annotations

import re
from typing import Any

from dalkit.engine.sql_literals import mask_strings
from dalkit.observe.param_compared import SECRET_NAMES

__all__ = ["masked"]

#: plan fields that name things (never a value): left as they are
_NAME_FIELDS = frozenset(
    ("Node Type", "Relation Name", "Schema", "Alias", "Index Name", "CTE Name", "Function Name")
)
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
# what PostgreSQL writes for a bound number: '100'::bigint, '1.5'::numeric
_NUMBER_LITERAL = re.compile(
    rf"'{_NUMBER}'::(?:smallint|integer|bigint|numeric|real|double precision)\b(?!\[)"
)
_COLUMN = r'[A-Za-z_][\w$]*|"(?:[^"]|"")*"'
_OPERATOR = r"\s*(?:[=<>]|<>|!=|<=|>=)\s*"
# a column, maybe cast, compared with a number: (pin = 1234), ((t.pin)::text > '15'::bigint);
# or a number compared with a column: (1234 = pin), ('15'::bigint < (t.pin)::text)
_COMPARED_NUMBER = re.compile(
    rf"(?P<column>{_COLUMN})\)?(?:::[\w ]+)?{_OPERATOR}\(?'?(?P<number>{_NUMBER})"
    rf"|(?<![\w$])'?(?P<first>{_NUMBER})'?(?:::[\w ]+?)?\)?{_OPERATOR}\(*(?P<then>{_COLUMN})"
)


def masked(data: Any, key: str = "") -> Any:
    """``data`` (PostgreSQL's JSON plan, or a SQLite plan's detail) with the values bound in it
    masked.

    Args:
        data: A plan, or a part of one.
        key: The field ``data`` is the value of (a name field is left as it is).

    Returns:
        The same structure, its values masked.
    """
    if isinstance(data, dict):
        return {k: masked(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [masked(v, key) for v in data]
    if isinstance(data, str) and key not in _NAME_FIELDS:
        return _COMPARED_NUMBER.sub(_mask_number, mask_strings(data, keep=_NUMBER_LITERAL))
    return data


def _mask_number(match: re.Match[str]) -> str:
    column, number = ("column", "number") if match["column"] is not None else ("then", "first")
    if not SECRET_NAMES.search(match[column]):
        return match[0]
    start, end = match.span(number)
    return match[0][: start - match.start()] + "***" + match[0][end - match.start() :]
