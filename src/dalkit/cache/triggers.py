"""Triggers: which tables a trigger writes, read from its code, so that the cache's entries
reading those tables depend on the table the trigger fires on (`dalkit.cache.catalog` keeps the
map). A trigger maintaining a counter, a summary or an audit table writes tables that no
statement of the application names.

PL/pgSQL functions (PostgreSQL) and trigger bodies (SQLite) are read for the targets of their
``INSERT INTO``, ``UPDATE``, ``DELETE FROM``, ``MERGE INTO``, ``TRUNCATE`` and ``REFRESH
MATERIALIZED VIEW``. A trigger may write anything, as far as the cache can tell, when its code
runs SQL built at run time (``EXECUTE``), runs DDL (``CREATE``, ``DROP``, ``ALTER``,
``IMPORT``), calls for its effects (``PERFORM f(...)``, ``CALL p(...)``) a function or a
procedure that the database does not define (PostgreSQL's own ``pg_*`` functions and
``set_config`` aside), or is written in another language, save PostgreSQL's built-in
(``internal``) trigger functions, the contrib ones that only change the row being written and
TimescaleDB's hypertable guard. A function of the database's that the trigger calls, for its
effects or inside an expression (``x := log_change(...)``), adds what it writes
(`dalkit.cache.functions`, which reads functions with `code_writes` too).

Written by hand, on sqlparse's tokens: no library reads what a trigger writes.
"""

from __future__ import annotations

from collections.abc import Container

from sqlparse.sql import Token

from dalkit.cache.tables import ALL
from dalkit.query.sql_tokens import code_tokens, identifier

__all__ = ["ANYTHING", "code_writes", "trigger_writes"]

#: what a trigger writes when the cache cannot tell which tables
ANYTHING: frozenset[str] = frozenset({ALL})

# C trigger functions known to write no other table: contrib's that only change the row being
# written (spi, lo), and TimescaleDB's guard on every hypertable, which only refuses a write
_ROW_ONLY_C = frozenset(
    {"moddatetime", "autoinc", "insert_username", "lo_manage", "insert_blocker"}
)
_HARMLESS_CALLS = frozenset({"set_config"})
# words between a DML keyword and its target
_BEFORE_TARGET = frozenset({"only", "table", "if", "exists"})
# words that are no target where one may follow (MERGE's and ON CONFLICT's UPDATE SET)
_NO_TARGET = frozenset({"set", "values", "default", "select"})

# DDL in a function's code (a procedure creating next month's partition, a function dropping a
# staging table)
_DDL = frozenset({"create", "drop", "alter", "import"})

_Words = list[tuple[Token, str | None]]


def trigger_writes(
    language: str, function: str, code: str, defined: Container[str] = ()
) -> frozenset[str]:
    """The tables a trigger's code writes, by `table_name`; `ANYTHING` when unknown.

    Args:
        language: The function's language (``plpgsql``, ``internal``, ``c``...), or
            ``sqlite`` for a SQLite trigger, whose code is its whole ``CREATE TRIGGER``.
        function: The function's name (PostgreSQL).
        code: The function's source (PostgreSQL's ``prosrc``), or the trigger's SQL.
        defined: The database's own functions, by lower-case name: one that the code calls
            for its effects (``PERFORM audit_row(...)``, ``CALL archive()``) adds what it
            writes, which the caller adds (`dalkit.cache.functions`); a call of any other
            makes it `ANYTHING`.
    """
    written, performed = code_writes(language, function, code)
    return ANYTHING if any(name not in defined for name in performed) else written


def code_writes(language: str, function: str, code: str) -> tuple[frozenset[str], frozenset[str]]:
    """What `trigger_writes` reads from code: the tables it writes (`ANYTHING` when unknown),
    and the functions it calls for their effects (``PERFORM f(...)``, ``CALL p(...)``), whose
    writes are not among them."""
    if language == "internal" or (language == "c" and function in _ROW_ONLY_C):
        return frozenset(), frozenset()
    if language not in ("plpgsql", "sqlite"):
        return ANYTHING, frozenset()
    words: _Words = [(token, _word(token)) for token in code_tokens(code)]
    if language == "sqlite":  # the statements after the header's BEGIN
        begins = [i for i, (_token, word) in enumerate(words) if word == "begin"]
        words = words[begins[0] + 1 :] if begins else []
    written: set[str] = set()
    performed: set[str] = set()
    for i, (token, word) in enumerate(words):
        after = words[i + 1][1] if i + 1 < len(words) else None
        if word == "perform" or (word == "call" and token.is_keyword):
            called = _called_name(words, i + 1)  # PERFORM f(...): called for its effects
            if called is None:
                if word == "call":
                    return ANYTHING, frozenset()
            elif not (called.startswith("pg_") or called in _HARMLESS_CALLS):
                performed.add(called)
            continue
        if word in ("execute", "copy") and token.is_keyword:
            return ANYTHING, frozenset()
        if word in _DDL and token.is_keyword and not _is_column_word(words, i):
            # any relation may change, or stop being what entries read
            return ANYTHING, frozenset()
        skip = 3 if after == "or" else 1  # SQLite's INSERT OR REPLACE, UPDATE OR IGNORE
        if word in ("insert", "replace", "merge", "delete"):
            if i + skip < len(words) and words[i + skip][1] in ("into", "from"):
                written.update(_names(words, i + skip + 1, many=False))
        elif word == "update" and (words[i - 1][1] if i else None) not in ("for", "key"):
            written.update(_names(words, i + skip, many=False))
        elif word == "truncate":
            written.update(_names(words, i + 1, many=True))
        elif word == "refresh" and after == "materialized":
            j = i + 2
            while j < len(words) and words[j][1] in ("view", "concurrently"):
                j += 1
            written.update(_names(words, j, many=False))
    return frozenset(written), frozenset(performed)


def _called_name(words: _Words, i: int) -> str | None:
    """The function called at ``words[i]`` (``f(``, or ``schema.f(``, by its last part, in
    lower case), or None when no call starts there (``PERFORM id FROM queue``)."""
    while i + 2 < len(words) and _is(words[i + 1], ".") and words[i + 2][1] is not None:
        i += 2
    if i + 1 < len(words) and words[i][1] is not None and _is(words[i + 1], "("):
        return str(words[i][1]).lower()
    return None


def _names(words: _Words, i: int, *, many: bool) -> list[str]:
    """The table named at ``words[i]`` (past ``ONLY``, ``TABLE``), or with ``many`` each of a
    comma-separated list; a schema-qualified name counts as its last part."""
    names: list[str] = []
    while i < len(words):
        while i < len(words) and words[i][1] in _BEFORE_TARGET:
            i += 1
        if i >= len(words) or words[i][1] is None or words[i][1] in _NO_TARGET:
            return names
        while i + 2 < len(words) and _is(words[i + 1], ".") and words[i + 2][1] is not None:
            i += 2
        names.append(str(words[i][1]).lower())  # as table_name folds every spelling
        if not many or i + 1 >= len(words) or not _is(words[i + 1], ","):
            return names
        i += 2
    return names


def _word(token: Token) -> str | None:
    """What ``token`` says: a name (`identifier`), or a keyword in lower case (DML, DDL)."""
    return identifier(token) or (str(token.value).lower() if token.is_keyword else None)


def _is_column_word(words: _Words, i: int) -> bool:
    """Whether ``words[i]`` is a name after a dot (``NEW.drop``), not a keyword."""
    return i > 0 and _is(words[i - 1], ".")


def _is(word: tuple[Token, str | None], punctuation: str) -> bool:
    return word[1] is None and str(word[0].value) == punctuation
