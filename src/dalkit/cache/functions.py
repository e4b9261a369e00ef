"""The database's own functions (PostgreSQL's ``CREATE FUNCTION``): which of them a statement
calls, and what each reads and writes, read from its code, so that a cached read calling one
depends on the tables it reads, and a statement calling one (``SELECT archive_orders()``, an
``UPDATE`` setting a column to ``next_number('invoices')``) invalidates the tables it writes.

A call is named ``name()`` among an entry's or a write's tables (`call`): the catalog map
(`dalkit.cache.catalog`) replaces it by what the function reads or writes, and drops the calls
of functions the database does not define (``lower()``, ``count()``): built-in functions write
no table and read none a statement does not name.

What a function reads: every relation its code names, and what the functions it calls read;
unknown (None) when its code runs SQL built at run time (``EXECUTE``), calls a `SESSION_BOUND`
built-in function (its result is the session's, not the data's), or it is written in another
language than PL/pgSQL or SQL. What it writes: what `code_writes` reads from its
code, and what the functions it calls write; anything (``*``) when that is unknown, or for a
``VOLATILE`` function in another language (a ``STABLE`` or ``IMMUTABLE`` one cannot write).

Written by hand, on sqlparse's tokens: no library reads what a stored function touches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dalkit.cache.tables import ALL, CALL, call, cascades_from, is_call
from dalkit.cache.triggers import ANYTHING, code_writes
from dalkit.engine.sql_calls import READ_ONLY_FUNCTIONS, SESSION_BOUND, called
from dalkit.query.sql_tokens import code_tokens, identifier

__all__ = ["Functions", "calls_in", "function_facts"]

_KEPT = 2000  # SQL texts whose calls calls_in keeps, at most
_calls_kept: dict[str, frozenset[str]] = {}
# a function's code -> what reading it found (the same code is read again once a minute)
_code_kept: dict[tuple[str, str, str], _Code] = {}


def calls_in(sql: str) -> frozenset[str]:
    """The calls (`call`) that ``sql`` may make (`dalkit.engine.sql_calls.called`): of the
    database's functions, and of the built-in `SESSION_BOUND` ones.

    Built-in functions that only read, and PostgreSQL's own ``pg_*`` ones, are left out at
    once, so that a statement of the usual kind names no call while the catalog is unknown
    (`CatalogMap.calls_written`). Kept per text, as `called` is.
    """
    found = _calls_kept.get(sql)
    if found is None:
        found = frozenset(
            call(name)
            for name in called(sql)
            if name in SESSION_BOUND or not (name in READ_ONLY_FUNCTIONS or name[:3] == "pg_")
        )
        if len(_calls_kept) >= _KEPT:
            _calls_kept.clear()
        _calls_kept[sql] = found
    return found


@dataclass(frozen=True, slots=True)
class Functions:
    """What the database's functions read and write, by name (overloads together).

    Attributes:
        reads: Each function -> the relations it reads (None: unknown).
        writes: Each function writing a table -> the tables (``*``: any).
        unsure: Whether a function's reads are unknown, or one writes: a read calling it
            bypasses the cache (`read_through`).
    """

    reads: Mapping[str, frozenset[str] | None]
    writes: Mapping[str, frozenset[str]]
    unsure: bool = False

    def written_by(self, names: Iterable[str]) -> set[str]:
        """``names`` with each call replaced by what its function writes, and what cascades
        from those (`cascades_from`: the function may UPDATE or DELETE them); a call of a
        function the database does not define (a built-in one) dropped."""
        found: set[str] = set()
        for name in names:
            if not is_call(name):
                found.add(name)
                continue
            for table in self.writes.get(name[: -len(CALL)], ()):
                found.add(table)
                if table != ALL:
                    found.add(cascades_from(table))
        return found

    def read_through(self, tables: Iterable[str]) -> tuple[list[str], set[str]]:
        """``tables`` with each call replaced by the relations its function reads, a call of a
        built-in function dropped; and apart, the calls whose reads are unknown or whose
        function writes (which a cache hit would not run), or of a `SESSION_BOUND` built-in
        one: such a read bypasses the cache."""
        read: list[str] = []
        unsure: set[str] = set()
        for name in tables:
            if not is_call(name):
                read.append(name)
                continue
            function = name[: -len(CALL)]
            if function not in self.reads:
                if function in SESSION_BOUND:
                    unsure.add(name)
                continue
            reads = self.reads[function]
            if reads is None or function in self.writes:
                unsure.add(name)
            else:
                read.extend(reads)
        return read, unsure


@dataclass(frozen=True, slots=True)
class _Code:
    """What one function's code says: relations or functions it names, what it calls, whether
    it hides what it reads, what it writes."""

    names: frozenset[str]
    calls: frozenset[str]
    opaque: bool
    writes: frozenset[str]
    performed: frozenset[str] = frozenset()  # called for effects: PERFORM f(), CALL p()


def function_facts(
    functions: Iterable[tuple[str, str, str, str]], relations: frozenset[str]
) -> Functions:
    """What each function reads and writes, following the functions it calls.

    Args:
        functions: (name, language, volatility, code) of each function: PostgreSQL's
            ``proname``, ``lanname``, ``provolatile`` (``v``, ``s``, ``i``) and source.
        relations: The database's relations, by `table_name`.
    """
    codes: dict[str, list[_Code]] = {}
    for name, language, volatility, code in functions:
        codes.setdefault(name.lower(), []).append(_read(name, language, volatility, code))
    reads: dict[str, frozenset[str] | None] = {}
    writes: dict[str, frozenset[str]] = {}
    for name in codes:
        reached = _reached(name, codes)
        own = [c for function in reached for c in codes[function]]
        opaque = any(c.opaque for c in own)
        reads[name] = None if opaque else _union(c.names for c in own) & relations
        written = _union(c.writes for c in own)
        if any(called not in codes for c in own for called in c.performed):
            written = ANYTHING  # a function the database does not define, called for effects
        if written:
            writes[name] = ANYTHING if ALL in written else written
    unsure = bool(writes) or any(found is None for found in reads.values())
    return Functions(reads=reads, writes=writes, unsure=unsure)


def _read(name: str, language: str, volatility: str, code: str) -> _Code:
    key = (language, volatility, code)
    found = _code_kept.get(key)
    if found is not None:
        return found
    if language not in ("plpgsql", "sql"):
        # C, PL/Python...: unknown reads; writes only when declared VOLATILE
        writes = ANYTHING if volatility == "v" else frozenset()
        found = _Code(frozenset(), frozenset(), True, writes)
    else:
        words = [identifier(token) for token in code_tokens(code)]
        named = frozenset(word for word in words if word is not None)
        calls = frozenset(c[: -len(CALL)] for c in calls_in(code))
        writes, performed = code_writes("plpgsql", name, code)
        found = _Code(
            names=named,
            calls=calls,
            # SQL built at run time, or a call of a SESSION_BOUND function (a tenant's
            # current_setting(), a nextval()): a read calling it is not served from the cache
            opaque="execute" in named or not calls.isdisjoint(SESSION_BOUND),
            writes=writes,
            performed=performed,
        )
    if len(_code_kept) >= _KEPT:
        _code_kept.clear()
    _code_kept[key] = found
    return found


def _reached(name: str, codes: Mapping[str, list[_Code]]) -> set[str]:
    """``name`` and every function its code calls, recursively."""
    found = {name}
    pending = [name]
    while pending:
        for code in codes[pending.pop()]:
            for callee in code.calls:
                if callee in codes and callee not in found:
                    found.add(callee)
                    pending.append(callee)
    return found


def _union(sets: Iterable[frozenset[str]]) -> frozenset[str]:
    return frozenset().union(*sets)
