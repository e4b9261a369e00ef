"""The driver calls that move bulk rows: binary COPY through psycopg (sync and async) and
asyncpg, with the driver's errors translated into dalkit's, each COPY timed and shown to the
query statistics, slow-query log and budgets (SQLAlchemy never sees it).

The repositories own the transaction handling around these (see `dalkit.repository.copy`).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import Connection

from dalkit.driver_errors import translate_dbapi_error
from dalkit.driver_messages import mask_chain
from dalkit.engine.build import get_async_driver_connection, get_driver_connection
from dalkit.engine.statement_hooks import driver_call
from dalkit.repository.copy import BulkPlan

if TYPE_CHECKING:  # greenlet, which SQLAlchemy's asyncio needs, is an extra
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["copy_rows", "copy_rows_async", "streams_rows", "translate_driver_error"]


@functools.cache
def streams_rows(driver: str) -> bool:
    """Whether a COPY through ``driver`` may read tuples made as it goes, aborted by the
    exception one raises. asyncpg before 0.32 sent that exception's text to the server as the
    COPY's failure reason: row values in the server's log, and from 9,996 bytes a message the
    server refused, leaving the rollback waiting forever (MagicStack/asyncpg#1354).

    Args:
        driver: The dialect's driver name.

    Returns:
        True for psycopg and for asyncpg from 0.32.
    """
    if driver != "asyncpg":
        return driver == "psycopg"
    major, minor = (int(part) for part in re.findall(r"\d+", metadata.version("asyncpg"))[:2])
    return (major, minor) >= (0, 32)


def translate_driver_error(exc: Exception) -> Exception:
    """A raw psycopg/asyncpg error as dalkit's DatabaseError (the engine's ``handle_error`` never
    sees errors from calls made on the driver connection itself)."""
    module = type(exc).__module__
    if not module.startswith(("psycopg", "asyncpg")):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    wrapper_class = (
        sqlalchemy.exc.IntegrityError
        if names & {"IntegrityError", "IntegrityConstraintViolationError"}
        else sqlalchemy.exc.DBAPIError
    )
    wrapper = wrapper_class(None, None, exc)
    return translate_dbapi_error(wrapper)


def _copy_statement(plan: BulkPlan, table_name: str | None, binary: bool) -> Any:
    from psycopg import sql

    table = sql.Identifier(table_name) if table_name else _psycopg_table(plan.table)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in plan.column_names)
    form = sql.SQL("BINARY" if binary else "TEXT")
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(table, columns, form)


def _binary_dumpers_exist(driver: Any, oids: Sequence[int]) -> bool:
    """Whether psycopg can write every column in binary; types it does not know (enums, domains
    of them) fall back to text COPY, where the server parses each value."""
    from psycopg import pq

    try:
        for oid in oids:
            driver.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
    except Exception:
        return False
    return True


def _psycopg_table(table: sa.Table) -> Any:
    from psycopg import sql

    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)


@contextlib.contextmanager
def _driver_errors() -> Iterator[None]:
    """The driver's errors raised in the block, as dalkit's (see `translate_driver_error`)."""
    try:
        yield
    except Exception as exc:
        translated = translate_driver_error(exc)
        if translated is exc:
            raise
        raise translated from mask_chain(exc)  # the cause a traceback prints


def copy_rows(
    connection: Connection,
    plan: BulkPlan,
    rows: Sequence[tuple[Any, ...]],
    oids: Sequence[int],
    table_name: str | None = None,
) -> None:
    """Binary COPY of ``rows`` through the psycopg connection behind ``connection`` (sync); an
    exception raised by iterating ``rows`` aborts it (`StreamedTuples.checked`). Timed and
    shown to the query statistics, slow-query log and budgets like any statement."""
    driver = get_driver_connection(connection)
    binary = _binary_dumpers_exist(driver, oids)
    with _driver_errors():
        statement = _copy_statement(plan, table_name, binary)
        with (
            driver_call(connection, _shown(connection, plan, table_name, binary), len(rows)),
            driver.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            if binary:
                copy.set_types(oids)
            for row in rows:
                copy.write_row(row)


async def copy_rows_async(
    connection: AsyncConnection,
    plan: BulkPlan,
    rows: Sequence[tuple[Any, ...]],
    oids: Sequence[int],
    table_name: str | None = None,
) -> None:
    """Binary COPY of ``rows`` through the asyncpg or async psycopg connection behind
    ``connection``; an exception raised by iterating ``rows`` aborts it, like `copy_rows()`'s."""
    driver = await get_async_driver_connection(connection)
    with _driver_errors():
        if hasattr(driver, "copy_records_to_table"):  # asyncpg: sends them as it reads them
            with driver_call(connection, _shown(connection, plan, table_name, True), len(rows)):
                await driver.copy_records_to_table(
                    table_name or plan.table.name,
                    records=rows,
                    columns=plan.column_names,
                    schema_name=None if table_name else plan.table.schema,
                )
            return
        binary = _binary_dumpers_exist(driver, oids)
        statement = _copy_statement(plan, table_name, binary)
        shown = _shown(connection, plan, table_name, binary)
        with driver_call(connection, shown, len(rows)):
            async with driver.cursor() as cursor, cursor.copy(statement) as copy:
                if binary:
                    copy.set_types(oids)
                for row in rows:
                    await copy.write_row(row)


def _shown(
    connection: Connection | AsyncConnection, plan: BulkPlan, table_name: str | None, binary: bool
) -> str:
    """The COPY as the observer shows it: the same text whichever driver sends it."""
    preparer = connection.dialect.identifier_preparer
    table = preparer.quote(table_name) if table_name else preparer.format_table(plan.table)
    columns = ", ".join(preparer.quote(name) for name in plan.column_names)
    return f"COPY {table} ({columns}) FROM STDIN (FORMAT {'BINARY' if binary else 'TEXT'})"
