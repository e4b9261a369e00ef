"""Tenant scoping's guard: a statement that reads or writes a tenant-scoped table by a path
the scoping never saw is refused before it is sent, so no path reads or writes another
tenant's rows silently.

Tenant scoping (`dalkit.query.tenant`) scopes what goes through a session: ORM and Core
statements, relationship and attribute loads, flushes, the repositories. What reaches the
database another way would see or change every tenant's rows: raw SQL (``text()`` even through
a session, ``db.sql()``, ``exec_driver_sql()``), a Core statement on a connection
(``engine.begin()``, ``session.connection().execute()``) and the Session's legacy bulk methods
(``bulk_insert_mappings``, ``bulk_save_objects``, ``bulk_update_mappings``), which run neither
statement nor flush events. A statement hook sees them all (it runs before every statement of
every engine a Database builds; dalkit.engine.statement_hooks) and lets a statement naming a
tenant-scoped table through only when

- the session's scoping handled it, and said so in its execution options (`CHECKED_OPTION`);
- or a flush whose new, changed and deleted objects the scoping checked sends it, on one of
  that flush's connections (`dalkit.query.running_flush`);
- or it runs inside `tenant_checked()`: dalkit's own statements over rows it stamped or checked
  (the repositories' bulk writes, the scoping's own key checks, EXPLAIN of a scoped select);
- or it runs inside ``every_tenant()``, for a statement meant for every tenant; or it is DDL.

Otherwise it raises `UnscopedStatementError` inside ``tenant(...)``, and `TenantRequiredError`
outside any tenant, as the ORM does. The tables a statement names are read from its SQL text,
compiled or raw alike: a regular expression of the tenant-scoped tables' names passes most
statements at once, and sqlparse's tokens (names only, not string literals or comments) decide
the rest, cached by text. A name counts unless the statement's engine is known to
have created a table of that name for another schema only (`dalkit.engine.schemas.of_engine`:
another database of the process that shares a name); tables made by migrations or another
process count. Its schema qualifier is not compared.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlparse import tokens as T

from dalkit.engine.schemas import of_engine
from dalkit.query.running_flush import in_running_flush
from dalkit.query.sql_tokens import code_tokens, identifier
from dalkit.query.tenant_cascades import DELETE_WORD, reached_scoped
from dalkit.query.tenant_context import (
    TenantRequiredError,
    UnscopedStatementError,
    current_tenant,
    scoping_off,
)

__all__ = [
    "CHECKED_OPTION",
    "TENANT_CHECKED",
    "guard",
    "is_scoped_table",
    "mentions_scoped",
    "names_scoped",
    "register",
    "registry",
    "tenant_checked",
]

#: the execution option tenant scoping sets on a statement it scoped or checked
CHECKED_OPTION = "dalkit_tenant_checked"
#: ``execution_options=`` for such a statement
TENANT_CHECKED = MappingProxyType({CHECKED_OPTION: True})

# set by tenant_checked(): the block's statements were scoped or checked by the caller
_checked: ContextVar[bool] = ContextVar("dalkit_tenant_checked", default=False)
# the tenant-scoped tables by lower-case name, and a pattern finding any name in a text
_tables: dict[str, tuple[sa.Table, ...]] = {}
_pattern: re.Pattern[str] | None = None
# the names each SQL text sent lately names: the text of a compiled statement is the same string
# object each time, its hash kept, so a look-up here (~0.06 us) replaces the case-blind search
# (~0.4 us a statement, measured by timeit on a 60-character SELECT)
_seen: dict[str, tuple[str, ...]] = {}
_SEEN_MAX = 4096
# DDL changes no tenant's rows, unless it copies them (CREATE TABLE ... AS SELECT) or empties
# the table (TRUNCATE, which sqlparse counts as DDL); SQLite's PRAGMAs read the schema (a
# table's columns, indexes and keys, when SQLAlchemy reflects it), never its rows
_SCHEMA_ONLY = frozenset({"PRAGMA"})
_DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY"})
_HOW = (
    "run it through a session (session.execute scopes ORM and Core statements; write their "
    "subqueries with the models, and no SQL text naming the table), the ORM or a repository; "
    "a statement meant for every tenant goes inside dalkit.query.tenant.every_tenant()"
)


@contextlib.contextmanager
def tenant_checked() -> Iterator[None]:
    """Let dalkit's own statements over rows it stamped or checked name tenant-scoped tables
    inside the block (the current thread or task).

    Yields:
        None: inside the block, the guard lets such statements through.
    """
    token = _checked.set(True)
    try:
        yield
    finally:
        _checked.reset(token)


def register(table: sa.Table) -> None:
    """Guard the statements that name ``table``, a tenant-scoped model's table.

    Args:
        table: The table.
    """
    global _tables, _pattern
    name = table.name.lower()
    known = _tables.get(name, ())
    if table in known:
        return
    # replaced whole: a statement running in another thread sees the old mapping or the new
    _tables = {**_tables, name: (*known, table)}
    # longest first: the alternation then never stops at a shorter name inside a longer one
    alternatives = sorted(_tables, key=len, reverse=True)
    _pattern = re.compile("|".join(re.escape(n) for n in alternatives), re.IGNORECASE)
    _seen.clear()


def names_scoped(names: Iterable[str]) -> bool:
    """Whether one of the tables ``names`` (``schema.table`` or ``table``) has the name of a
    tenant-scoped table.

    Args:
        names: Table names, as the query cache knows them.
    """
    tables = _tables
    return bool(tables) and any(name.rsplit(".", 1)[-1].lower() in tables for name in names)


def registry() -> dict[str, tuple[sa.Table, ...]]:
    """The tenant-scoped tables by lower-case name: a new mapping each time one is registered,
    so a cache of what was decided from it can tell when to forget."""
    return _tables


def mentions_scoped(text: str) -> bool:
    """Whether ``text``, a fragment of SQL (``text()``, ``literal_column()``, a prefix or a
    hint), mentions a tenant-scoped table's name anywhere, string literals included: a fragment
    is judged alone, and two of them can open and close a quote around the name between them.

    Args:
        text: The fragment.
    """
    return _pattern is not None and _pattern.search(text) is not None


def is_scoped_table(table: object) -> bool:
    """Whether ``table`` (annotated or not) is a tenant-scoped model's table, registered when
    its model got the mixin.

    Args:
        table: Any FROM element.
    """
    if not isinstance(table, sa.Table):
        return False
    plain = table._deannotate()
    return any(known is plain for known in _tables.get(table.name.lower(), ()))


def guard(cursor: Any, statement: str, context: Any) -> None:
    """The statement hook: raise for a statement naming a tenant-scoped table that tenant
    scoping did not scope, before it is sent; return for everything else."""
    if _pattern is None or context.isddl or scoping_off() or _checked.get():
        return
    engine = context.root_connection.engine
    if DELETE_WORD.search(statement):  # scoped or not, it may reach every tenant's rows
        reached = reached_scoped(statement, _tables)
        if reached is not None and of_engine([reached[0]], engine):
            how = (
                "which belongs to no tenant, but whose foreign keys carry it into every "
                f"tenant's rows of the tenant-scoped table {reached[1]!r}: refused; a "
                "statement meant for every tenant goes inside "
                "dalkit.query.tenant.every_tenant()"
            )
            _refuse(f"a DELETE, TRUNCATE or key UPDATE of {reached[0].name!r}", how, how)
    if context.execution_options.get(CHECKED_OPTION):
        return
    named = _seen.get(statement)
    if named is None:
        named = _named(statement) if _pattern.search(statement) else ()
        if len(_seen) >= _SEEN_MAX:
            _seen.clear()
        _seen[statement] = named
    if not named:
        return
    table = next((n for n in named if of_engine(_tables[n], engine)), None)
    if table is None or in_running_flush(context.root_connection):
        return
    _refuse(
        f"a statement naming the tenant-scoped table {table!r}",
        "by a path tenant scoping cannot scope: refused rather than reading or writing every "
        f"tenant's rows; {_HOW}",
        "by a path tenant scoping cannot scope (raw SQL, a text() or literal_column() fragment "
        "or a Table in a subquery of a session's statement, a Core statement on a connection, "
        f"a legacy bulk method of the Session): {_HOW}",
    )


def _refuse(what: str, outside: str, inside: str) -> None:
    """Raise for ``what``: TenantRequiredError (saying ``outside``) outside any tenant, else
    UnscopedStatementError (saying ``inside``)."""
    current = current_tenant()
    if current is None:
        raise TenantRequiredError(f"{what} outside `with dalkit.tenant(...)`, {outside}")
    raise UnscopedStatementError(f"{what} inside tenant {current!r}, {inside}")


def _named(sql: str) -> tuple[str, ...]:
    """The names of tenant-scoped tables ``sql`` names as identifiers (lower case); none when
    it is DDL that reads and writes no rows. Remembered by text in ``_seen``: sqlparse takes
    about a millisecond a statement, and applications send the same few again and again."""
    first = True
    ddl = False
    found: list[str] = []
    for token in code_tokens(sql):
        word = str(token.value).upper()
        if first:
            if word in _SCHEMA_ONLY:
                return ()
            ddl, first = token.ttype in T.DDL and word != "TRUNCATE", False
        elif ddl and word in _DML and (token.ttype in T.DML or token.ttype in T.Keyword):
            ddl = False
        name = identifier(token)
        if name is not None and name.lower() in _tables and name.lower() not in found:
            found.append(name.lower())
    return () if ddl else tuple(found)
