"""The values PostgreSQL writes into a plan (``Filter: (password = 'hunter2'::text)``), masked
for `dalkit.observe.explain`: every string literal (`mask_strings`) but a number's
(``'100'::bigint``), and every number in a condition that names a column named like a secret
(`dalkit.secret_names`), however it is compared: ``(pin = ***)``, ``(*** = pin)``,
``((pin + ***) = ***)``, ``(COALESCE(pin, ***) = ***)``, ``(pin IS DISTINCT FROM ***)``; and
the number a parameter named like a secret was given, whatever column it meets (``(code =
***)`` for ``code = :otp``), as the slow-query log masks it by its name."""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping
from typing import Any

from dalkit.engine.sql_literals import mask_strings
from dalkit.secret_names import is_secret_name

__all__ = ["masked", "secret_numbers"]

#: plan fields that name things (never a value): left as they are
_NAME_FIELDS = frozenset(
    ("Node Type", "Relation Name", "Schema", "Alias", "Index Name", "CTE Name", "Function Name")
)
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
# what PostgreSQL writes for a bound number: '100'::bigint, '1.5'::numeric
_NUMBER_LITERAL = re.compile(
    rf"'{_NUMBER}'::(?:smallint|integer|bigint|numeric|real|double precision)\b(?!\[)"
)
# a number, bare or in a literal ('100'::bigint); not one in a name (t2, $1) or in a type's
# modifier (numeric(10,2))
_NUMBERS = re.compile(rf"(?P<kept>::[\w ]+\(\d+(?:,\d+)?\))|(?<![\w$.]){_NUMBER}(?![\w.])")
# what PostgreSQL writes between the conditions of a filter: ((pin = 1) AND (id = 2))
_CONDITIONS = re.compile(r"(\s(?:AND|OR)\s)")


def secret_numbers(params: Mapping[str, Any]) -> frozenset[str]:
    """The numbers given to parameters named like a secret (``otp``, ``pin``), as a plan
    writes them.

    Args:
        params: The statement's parameters.

    Returns:
        Their text, for `masked`.
    """
    return frozenset(
        str(value)
        for name, value in params.items()
        if is_secret_name(str(name))
        and isinstance(value, int | float | decimal.Decimal)
        and not isinstance(value, bool)
    )


def masked(data: Any, key: str = "", numbers: frozenset[str] = frozenset()) -> Any:
    """``data`` (PostgreSQL's JSON plan, or a SQLite plan's detail) with the values bound in it
    masked.

    Args:
        data: A plan, or a part of one.
        key: The field ``data`` is the value of (a name field is left as it is).
        numbers: Numbers masked wherever they stand (`secret_numbers`).

    Returns:
        The same structure, its values masked.
    """
    if isinstance(data, dict):
        return {k: masked(v, k, numbers) for k, v in data.items()}
    if isinstance(data, list):
        return [masked(v, key, numbers) for v in data]
    if isinstance(data, str) and key not in _NAME_FIELDS:
        parts = _CONDITIONS.split(mask_strings(data, keep=_NUMBER_LITERAL))
        shown = []
        for part in parts:
            secret = is_secret_name(part)
            if secret or numbers:
                part = _NUMBERS.sub(lambda m, s=secret: _number(m, s, numbers), part)
            shown.append(part)
        return "".join(shown)
    return data


def _number(match: re.Match[str], secret: bool, numbers: frozenset[str]) -> str:
    """A number of a plan's condition as shown: ``***`` in a condition naming a secret's
    column, or when a secret's parameter was given it."""
    if match["kept"] is not None or not (secret or match[0] in numbers):
        return match[0]
    return "***"
