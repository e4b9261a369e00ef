"""``op.create_index_concurrently`` / ``op.drop_index_concurrently``, and a ``.sql`` revision's
CONCURRENTLY statements: PostgreSQL's CONCURRENTLY builds outside the migration transaction
(asyncpg included), an INVALID leftover dropped first, lock timeouts retried; plain index DDL
elsewhere. Autogenerate emits the operations for existing tables."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import Operations, ops

from dalkit.errors import DatabaseError
from dalkit.migrations.settings import MigrationSettings

__all__ = [
    "CreateIndexConcurrentlyOp",
    "DropIndexConcurrentlyOp",
    "execute_concurrently",
    "is_concurrent",
    "use_concurrent_indexes",
]

LOCK_NOT_AVAILABLE = "55P03"

_INVALID_INDEX = sa.text(
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :name AND NOT i.indisvalid "
    "AND n.nspname = coalesce(:schema, current_schema())"
)
# what PostgreSQL refuses inside a transaction block ("cannot run inside a transaction block")
_CONCURRENT = re.compile(
    r"^\s*((CREATE\s+(UNIQUE\s+)?|DROP\s+)INDEX\s+|REINDEX\b[^;]*?[\s(,])CONCURRENTLY\b",
    re.IGNORECASE,
)  # REINDEX's also as an option: REINDEX (CONCURRENTLY) TABLE t
_IDENTIFIER = r'"(?:[^"]|"")+"|[^\s"(.;]+'
_CREATED_INDEX = re.compile(
    rf"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(IF\s+NOT\s+EXISTS\s+)?(?P<name>{_IDENTIFIER})"
    rf"\s+ON\s+(ONLY\s+)?((?P<schema>{_IDENTIFIER})\s*\.\s*)?({_IDENTIFIER})",
    re.IGNORECASE,
)

# a named build, a drop, without IF [NOT] EXISTS
_BARE_CREATE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?!(IF|ON)\b)", re.I)
_BARE_DROP = re.compile(r"^\s*DROP\s+INDEX\s+CONCURRENTLY\s+(?!IF\b)", re.I)


@Operations.register_operation("create_index_concurrently")
class CreateIndexConcurrentlyOp(ops.CreateIndexOp):
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS, in an autocommit block on PostgreSQL."""

    concurrent = True

    @classmethod
    def create_index_concurrently(
        cls,
        operations: Operations,
        index_name: str,
        table_name: str,
        columns: Sequence[str | sa.TextClause],
        *,
        schema: str | None = None,
        unique: bool = False,
        **kw: Any,
    ) -> None:
        """Build an index without blocking writes (a plain CREATE INDEX off PostgreSQL).

        Called in a revision as ``op.create_index_concurrently(...)``.

        Args:
            operations: Alembic's ``op`` (passed by Alembic).
            index_name: The index's name.
            table_name: The table's name.
            columns: Column names or SQL expressions.
            schema: The table's schema.
            unique: A unique index.
            **kw: Other arguments of Alembic's ``create_index``.

        Examples:
            ```python
            def upgrade() -> None:
                op.create_index_concurrently("ix_orders_customer_id", "orders", ["customer_id"])
            ```
        """
        operations.invoke(cls(index_name, table_name, columns, schema=schema, unique=unique, **kw))


@Operations.register_operation("drop_index_concurrently")
class DropIndexConcurrentlyOp(ops.DropIndexOp):
    """DROP INDEX CONCURRENTLY IF EXISTS, in an autocommit block on PostgreSQL."""

    concurrent = True

    @classmethod
    def drop_index_concurrently(
        cls,
        operations: Operations,
        index_name: str,
        table_name: str | None = None,
        *,
        schema: str | None = None,
        **kw: Any,
    ) -> None:
        """Drop an index without an ACCESS EXCLUSIVE lock (a plain DROP INDEX off PostgreSQL).

        Called in a revision as ``op.drop_index_concurrently(...)``.

        Args:
            operations: Alembic's ``op`` (passed by Alembic).
            index_name: The index's name.
            table_name: The table's name.
            schema: The table's schema.
            **kw: Other arguments of Alembic's ``drop_index``.
        """
        operations.invoke(cls(index_name, table_name=table_name, schema=schema, **kw))


@Operations.implementation_for(CreateIndexConcurrentlyOp)
def _create_concurrently(operations: Operations, operation: CreateIndexConcurrentlyOp) -> None:
    context = operations.get_context()
    index = operation.to_index(context)
    if context.dialect.name != "postgresql":
        operations.impl.create_index(index)
        return
    index.dialect_options["postgresql"]["concurrently"] = True
    with context.autocommit_block():
        if context.as_sql:
            operations.impl.create_index(index, if_not_exists=True)
            return

        def create() -> None:
            operations.impl.create_index(index, if_not_exists=True)

        _build(operations, index.name, operation.schema, create)


def is_concurrent(statement: str) -> bool:
    """Whether a SQL statement is one PostgreSQL runs only outside a transaction block.

    Args:
        statement: One SQL statement.

    Returns:
        True for ``CREATE [UNIQUE] INDEX``, ``DROP INDEX`` and ``REINDEX`` ... ``CONCURRENTLY``.
    """
    return _CONCURRENT.match(statement) is not None


def execute_concurrently(operations: Operations, statement: str) -> None:
    """Run a ``.sql`` revision's CONCURRENTLY statement as ``op.create_index_concurrently`` runs
    its own: in an autocommit block on PostgreSQL, after dropping an INVALID index of the same
    name that an earlier failed build left, with lock timeouts retried (as it is elsewhere).

    Args:
        operations: Alembic's ``op`` of the running revision.
        statement: The statement (see `is_concurrent`).
    """
    context = operations.get_context()
    if context.dialect.name != "postgresql":
        operations.execute(statement)
        return
    created = _CREATED_INDEX.match(statement)
    with context.autocommit_block():
        if context.as_sql:
            operations.execute(statement)
            return
        # IF [NOT] EXISTS, as dalkit's own builds: a run of the revision again (a lock timeout's
        # retry after the build committed, an `up` after a later statement failed) gets past it
        statement = _BARE_CREATE.sub(lambda m: f"{m[0]}IF NOT EXISTS ", statement, count=1)
        statement = _BARE_DROP.sub(lambda m: f"{m[0]}IF EXISTS ", statement, count=1)
        if created is None:
            _retry_lock_timeouts(operations, lambda: operations.execute(statement))
        else:
            schema = created["schema"]
            name, schema = _unquote(created["name"]), schema and _unquote(schema)
            _build(operations, name, schema, lambda: operations.execute(statement))


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()  # as PostgreSQL folds it


def _build(
    operations: Operations, name: str | None, schema: str | None, create: Callable[[], object]
) -> None:
    def build() -> None:
        _drop_if_invalid(operations, name, schema)
        try:
            create()
        except Exception:
            # a failed concurrent build leaves an INVALID index that a retry would keep; the
            # drop may be blocked by what blocked the build: the next attempt drops it first
            with contextlib.suppress(DatabaseError):
                _drop_if_invalid(operations, name, schema)
            raise

    _retry_lock_timeouts(operations, build)


@Operations.implementation_for(DropIndexConcurrentlyOp)
def _drop_concurrently(operations: Operations, operation: DropIndexConcurrentlyOp) -> None:
    context = operations.get_context()
    if context.dialect.name != "postgresql":
        operations.impl.drop_index(operation.to_index(context))
        return
    with context.autocommit_block():
        statement = _drop_statement(operations, str(operation.index_name), operation.schema)
        if context.as_sql:
            operations.execute(statement)
            return
        _retry_lock_timeouts(operations, lambda: operations.execute(statement))


def _drop_statement(operations: Operations, name: str, schema: str | None) -> str:
    quote = operations.impl.dialect.identifier_preparer.quote
    qualified = f"{quote(schema)}.{quote(name)}" if schema else quote(name)
    return f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}"


def _drop_if_invalid(operations: Operations, name: str | None, schema: str | None) -> None:
    if name is None:
        return
    found = operations.get_bind().execute(_INVALID_INDEX, {"name": name, "schema": schema})
    if found.first() is not None:
        operations.execute(_drop_statement(operations, name, schema))


def _retry_lock_timeouts(operations: Operations, work: Callable[[], object]) -> None:
    settings = operations.get_context().opts.get("dalkit_settings") or MigrationSettings()
    attempt = 0
    while True:
        try:
            work()
            return
        except DatabaseError as exc:
            attempt += 1
            if exc.sqlstate != LOCK_NOT_AVAILABLE or attempt > settings.lock_retries:
                raise
            time.sleep(settings.backoff(attempt))


@renderers.dispatch_for(CreateIndexConcurrentlyOp)
def _render_create(context: AutogenContext, operation: CreateIndexConcurrentlyOp) -> str:
    plain = ops.CreateIndexOp(
        operation.index_name,
        operation.table_name,
        operation.columns,
        schema=operation.schema,
        unique=operation.unique,
        **operation.kw,
    )
    text: str = renderers.dispatch(plain)(context, plain)
    return text.replace("create_index(", "create_index_concurrently(", 1)


@renderers.dispatch_for(DropIndexConcurrentlyOp)
def _render_drop(context: AutogenContext, operation: DropIndexConcurrentlyOp) -> str:
    plain = ops.DropIndexOp(
        operation.index_name, operation.table_name, schema=operation.schema, **operation.kw
    )
    text: str = renderers.dispatch(plain)(context, plain)
    return text.replace("drop_index(", "drop_index_concurrently(", 1)


def use_concurrent_indexes(script: ops.MigrationScript) -> None:
    """Rewrite an autogenerated script: index ops on tables the script neither creates nor drops
    become their concurrent versions, in the upgrade and the downgrade."""
    for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
        fresh = {
            o.table_name
            for o in container.ops
            if isinstance(o, ops.CreateTableOp | ops.DropTableOp)
        }
        _rewrite(container.ops, fresh)


def _rewrite(operations: list[ops.MigrateOperation], fresh: set[str]) -> None:
    for position, operation in enumerate(operations):
        if isinstance(operation, ops.ModifyTableOps):
            _rewrite(operation.ops, fresh)
        elif getattr(operation, "concurrent", False):
            continue
        elif isinstance(operation, ops.CreateIndexOp) and operation.table_name not in fresh:
            operations[position] = CreateIndexConcurrentlyOp(
                operation.index_name,
                operation.table_name,
                operation.columns,
                schema=operation.schema,
                unique=operation.unique,
                **operation.kw,
            )
        elif isinstance(operation, ops.DropIndexOp) and operation.table_name not in fresh:
            operations[position] = DropIndexConcurrentlyOp(
                operation.index_name,
                operation.table_name,
                schema=operation.schema,
                **operation.kw,
            )
