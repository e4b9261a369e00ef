"""Capture of INSERT, UPDATE and DELETE statements run through a session on an audited table,
ORM-enabled or Core (upserts included), of the audited rows a DELETE or an UPDATE reaches
through foreign keys (`.cascades`), and refusal of raw SQL that writes one. The
before-image of an UPDATE or DELETE is read in chunks: a large one goes through a temporary
table on the server, so memory holds one chunk whatever the number of rows.

Every row such a statement writes is recorded, and none unrecorded: its before-image is read
(and locked, `BEFORE_IMAGE_LOCK`) by its WHERE, then the statement runs limited to the primary
keys that read found (``AND key IN (...)``, or a sub-select of the temporary table). Without
that limit a row that another transaction made match the WHERE in between, and committed
(PostgreSQL's READ COMMITTED takes a new snapshot for each statement), was written with no
entry. It is left alone, as if the statement had run at the read. The ORM bulk UPDATE by primary
key is not limited (its rows name their keys, and SQLAlchemy takes no further WHERE with them):
it fails instead when a key it names was not found (`.locking.refuse_absent_keys`), by the
read of its rows or, on a table whose ON UPDATE actions reach audited rows, audited or not, by
the lock of the rows it names before their dependents are read (`.locking.dependents_of`). A
raw SQL write is refused (`.raw`). An upsert on PostgreSQL updates only the rows its read
found (`.locking.upsert_limited`); a row that another transaction inserted under a conflicting
key in between is no creation of this write (`.locking.written_here`), and DO UPDATE runs again
for it once it is locked (`_upsert_the_rest`)."""

from __future__ import annotations

import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState, Session

from dalkit.audit.cascades import has_audited_dependents
from dalkit.audit.errors import UnauditedWriteError
from dalkit.audit.guard import recorded, unrecorded_allowed
from dalkit.audit.locking import (
    dependents_of,
    key_of,
    refuse_absent_keys,
    upsert_limited,
    written_here,
)
from dalkit.audit.raw import check_raw_write
from dalkit.audit.records import (
    IN_CHUNK,
    full,
    record_since,
    row,
    rows_by,
    temporary_table,
    write,
)
from dalkit.audit.registry import ModelAudit, table_audit
from dalkit.query.soft_delete import UNKNOWN, conflict_columns, inserted_rows
from dalkit.query.tenant_guard import TENANT_CHECKED

__all__ = ["on_orm_execute"]


def on_orm_execute(state: ORMExecuteState) -> Any:
    statement = state.statement
    if isinstance(statement, sa.TextClause):
        if not unrecorded_allowed():  # unaudited() lets raw SQL through, as the guard does
            bind = state.session.get_bind()
            check_raw_write(statement.text, getattr(bind, "engine", bind))
        return None
    if not (state.is_insert or state.is_update or state.is_delete) or state.is_from_statement:
        return None
    dml = typing.cast("sa.Insert | sa.Update | sa.Delete", statement)
    config = table_audit(dml.table)
    updating = isinstance(dml, sa.Update)
    cascading = not isinstance(dml, sa.Insert) and has_audited_dependents(
        dml.table, updating=updating
    )
    if config is None and not cascading:
        return None
    dependents = None
    if cascading:
        dependents, dml = dependents_of(state, dml, updating)
    if config is None:
        result = _invoke(state, dml)
    elif isinstance(dml, sa.Insert):
        result = _capture_insert(state, config, dml)
    else:
        result = _capture_change(state, config, dml)
    if dependents is not None:
        dependents.record(state.session)
    return result


def _invoke(state: ORMExecuteState, statement: Any = None) -> Any:
    # what the statement writes is recorded here, so the guard lets it through (.guard); a
    # context rather than an execution option, which an ORM bulk UPDATE by primary key drops
    with recorded():
        return state.invoke_statement(statement)


# -- INSERT, and INSERT ... ON CONFLICT ------------------------------------------------------
def _capture_insert(state: ORMExecuteState, config: ModelAudit, statement: sa.Insert) -> Any:
    """Rows are found again by their conflict target (upserts), primary key or a unique key they
    all carry, read before and after: new ones are creates, changed ones updates."""
    table = typing.cast("sa.Table", statement.table)
    names = _attribute_names(config, table)
    rows = [
        {names[k]: v for k, v in r.items() if k in names}
        for r in inserted_rows(statement, state.parameters)
    ]
    if statement.select is not None or not rows:
        raise UnauditedWriteError(
            f"INSERT ... SELECT into {table.name}, the table of an audited model, cannot be "
            "recorded: insert the rows through the ORM or a repository"
        )
    _refuse_upsert_of_primary_key(statement, config, table)
    lookup = _lookup(config, table, statement, rows)
    session = state.session
    if lookup is None:
        if len(rows) != 1:
            raise UnauditedWriteError(
                f"an INSERT of {len(rows)} rows into {table.name} (audited) without their "
                "primary or unique key values cannot be recorded: include the keys, or add the "
                "objects through the ORM"
            )
        result = _invoke(state)
        key = tuple(getattr(result, "inserted_primary_key", None) or ())
        if not key or None in key:
            raise UnauditedWriteError(f"the key of the row inserted into {table.name} is unknown")
        after = rows_by(session, config, config.primary_key, [key])
        write(session, [row(config, "create", k, full(config, v)) for k, v in after.items()])
        return result
    keys = [tuple(r[n] for n in lookup) for r in rows]
    # the rows already there are followed by their primary keys: an upsert's SET may change
    # the very values (its conflict target) they were found by
    found = rows_by(session, config, lookup, keys, locked=True).values()
    there = {config.key_of(old): old for old in found}
    postgres = session.connection().dialect.name == "postgresql"
    result = _invoke(state, upsert_limited(statement, config, there) if postgres else None)
    record_since(session, config, there)
    found = rows_by(session, config, lookup, keys).values()
    new = [r for r in found if config.key_of(r) not in there]
    clause = statement._post_values_clause  # ON CONFLICT
    created = written_here(session, config, new) if clause is not None else new
    if len(created) < len(new) and getattr(clause, "update_values_to_set", None) is not None:
        mine = {config.key_of(r) for r in created}
        others = [config.key_of(r) for r in new if config.key_of(r) not in mine]
        result = _upsert_the_rest(state, config, statement, result, others)
    write(
        session, [row(config, "create", config.key_of(new), full(config, new)) for new in created]
    )
    return result


def _upsert_the_rest(
    state: ORMExecuteState,
    config: ModelAudit,
    statement: Any,
    result: Any,
    keys: list[tuple[Any, ...]],
) -> Any:
    """The upsert again, for the rows that another transaction inserted after the locked read,
    which the first run (limited to the rows the read found, `upsert_limited`) left alone: now
    there to lock and read, they are updated as on a conflict (DO NOTHING leaves them again)
    and recorded as updates. Their result is merged with the first run's."""
    session = state.session
    before = rows_by(session, config, config.primary_key, keys, locked=True)
    rest = _invoke(state, upsert_limited(statement, config, before))
    record_since(session, config, before)
    return result.merge(rest)  # RETURNING rows and rowcounts of both runs


def _refuse_upsert_of_primary_key(
    statement: sa.Insert, config: ModelAudit, table: sa.Table
) -> None:
    """An upsert whose DO UPDATE sets a primary key: the row it changes could not be found
    again, as for an UPDATE statement that sets one."""
    clause = getattr(statement, "_post_values_clause", None)
    updated = getattr(clause, "update_values_to_set", None) or {}
    names = {k if isinstance(k, str) else getattr(k, "key", None) for k in updated}
    keys = set(config.primary_key) | {c.name for c in table.primary_key.columns}
    if not unrecorded_allowed() and not keys.isdisjoint(names):
        raise UnauditedWriteError(
            f"this upsert's DO UPDATE sets the primary key of {table.fullname}, the table of an "
            "audited model, and its changes cannot be followed: change the key through the ORM "
            "(its flush records it), or inside dalkit.audit.unaudited()"
        )


def _attribute_names(config: ModelAudit, table: sa.Table) -> dict[str, str]:
    """Attribute key by attribute or column key: statements use either."""
    names = {key: key for key, _ in config.fields}
    for key, column in config.fields:
        names.setdefault(getattr(column, "key", key), key)
    return names


def _lookup(
    config: ModelAudit, table: sa.Table, statement: sa.Insert, rows: Sequence[Mapping[str, Any]]
) -> tuple[str, ...] | None:
    """The fields every row carries a known value of and that identify one row each."""
    names = _attribute_names(config, table)
    target = conflict_columns(statement, table)
    candidates: list[tuple[str, ...]] = []
    if target is not None:
        candidates.append(tuple(names[c.key] for c in target if c.key in names))
    candidates.append(config.primary_key)
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            candidates.append(tuple(names.get(c.key, "") for c in constraint.columns))
    for index in table.indexes:
        if index.unique and len(index.expressions) == len(index.columns):
            candidates.append(tuple(names.get(c.key, "") for c in index.columns))
    candidates.extend((names.get(c.key, ""),) for c in table.columns if c.unique)
    for candidate in candidates:
        if candidate and all(
            n in r and r[n] is not UNKNOWN and r[n] is not None for r in rows for n in candidate
        ):
            return candidate
    return None


# -- UPDATE and DELETE -------------------------------------------------------------------------
def _capture_change(
    state: ORMExecuteState, config: ModelAudit, statement: sa.Update | sa.Delete
) -> Any:
    session = state.session
    deleting = isinstance(statement, sa.Delete)
    where = statement.whereclause
    table = typing.cast("sa.Table", statement.table)
    if not deleting and not unrecorded_allowed() and _sets_primary_key(state, config, table):
        # its rows are read before by their keys, and found after by the same keys: a row
        # whose key the statement changes would be found by neither, and go unrecorded
        raise UnauditedWriteError(
            f"this UPDATE sets the primary key of {table.fullname}, the table of an audited "
            "model, and its changes cannot be followed: change the key through the ORM "
            "(its flush records it), or inside dalkit.audit.unaudited()"
        )
    if state.is_executemany:
        params: list[dict[str, Any]] = state.parameters  # type: ignore[assignment]
        if where is None and state.bind_mapper is not None:
            # ORM bulk UPDATE by primary key: the rows name the keys (and SQLAlchemy takes no
            # further WHERE with them)
            keys = [config.key_of(p) for p in params]
            before = rows_by(session, config, config.primary_key, keys, locked=True)
            refuse_absent_keys(table, keys, before)
            result = _invoke(state, statement)
        else:
            before = {}
            for params_of_one in params:
                before.update(_read(session, config, table, where, params_of_one, None))
            # an IN list of the keys cannot go with executemany: they go to a temporary table
            connection = session.connection()
            image = _image_table(connection, config)
            if before:
                connection.execute(image.insert(), list(before.values()))
            result = _invoke(state, _in_image(statement, config, image))
            image.drop(connection)
        record_since(session, config, before, deleting=deleting)
        return result
    single = typing.cast("Mapping[str, Any]", state.parameters or {})
    before = _read(session, config, table, where, single, IN_CHUNK + 1)
    if len(before) <= IN_CHUNK:
        result = _invoke(state, _locked_only(statement, config, before))
        record_since(session, config, before, deleting=deleting)
        return result
    return _capture_large(state, config, statement, where, deleting)


def _locked_only(statement: Any, config: ModelAudit, keys: Collection[tuple[Any, ...]]) -> Any:
    """``statement`` limited to the rows whose before-image was read (and locked) by their
    primary ``keys``: a row that another transaction made match its WHERE after that read
    (READ COMMITTED takes a new snapshot for each statement) is left alone, not written
    unrecorded."""
    values = [key[0] for key in keys] if len(config.primary_key) == 1 else list(keys)
    return statement.where(key_of(config, statement).in_(values))


def _sets_primary_key(state: ORMExecuteState, config: ModelAudit, table: sa.Table) -> bool:
    """Whether the UPDATE's SET clause, or its parameters (a Core UPDATE takes the columns it
    is not given in ``values()`` from them), names a primary key column."""
    keys = set(config.primary_key) | {c.name for c in table.primary_key.columns}
    statement: Any = state.statement
    named = list(statement._values or {})  # ordered_values() keeps them here too
    if not state.is_executemany:  # many rows' parameters name the keys of an ORM bulk UPDATE
        named += list(typing.cast("Mapping[str, Any]", state.parameters or {}))
    names = {k if isinstance(k, str) else getattr(k, "key", None) for k in named}
    return not keys.isdisjoint(names)


def _read(
    session: Session,
    config: ModelAudit,
    table: sa.Table,
    where: Any,
    params: Mapping[str, Any],
    limit: int | None,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    statement = _before_select(config, table, where)
    if limit is not None:
        statement = statement.limit(limit)
    result = session.connection().execute(statement, dict(params), execution_options=TENANT_CHECKED)
    return {config.key_of(r): dict(r) for r in result.mappings()}


def _before_select(config: ModelAudit, table: sa.Table, where: Any) -> sa.Select[Any]:
    """The rows the statement will write, locked (`BEFORE_IMAGE_LOCK`): only the audited
    table's, whatever else its WHERE names."""
    statement = config.select()
    statement = statement.where(where) if where is not None else statement.select_from(table)
    return statement.with_for_update(of=table)


def _capture_large(
    state: ORMExecuteState, config: ModelAudit, statement: Any, where: Any, deleting: bool
) -> Any:
    """The before-image goes to a temporary table, then is compared with the rows as they are
    after the statement a chunk at a time, in primary key order."""
    session = state.session
    connection = session.connection()
    table = typing.cast("sa.Table", statement.table)
    image = _image_table(connection, config)
    copy = image.insert().from_select(list(config.keys), _before_select(config, table, where))
    parameters = dict(typing.cast("Mapping[str, Any]", state.parameters or {}))
    connection.execute(copy, parameters, execution_options=TENANT_CHECKED)
    result = _invoke(state, _in_image(statement, config, image))
    pk = [image.c[k] for k in config.primary_key]
    last: tuple[Any, ...] | None = None
    while True:
        chunk_query = sa.select(image).order_by(*pk).limit(IN_CHUNK)
        if last is not None:
            after_last = pk[0] > last[0] if len(pk) == 1 else sa.tuple_(*pk) > sa.tuple_(*last)
            chunk_query = chunk_query.where(after_last)
        chunk = connection.execute(chunk_query).mappings().all()  # the temporary table
        if not chunk:
            break
        record_since(session, config, {config.key_of(r): dict(r) for r in chunk}, deleting=deleting)
        last = config.key_of(chunk[-1])
    image.drop(connection)
    return result


def _image_table(connection: sa.Connection, config: ModelAudit) -> sa.Table:
    """A new temporary table of ``config``'s recorded fields, for a before-image."""
    return temporary_table(connection, ((k, c.type) for k, c in config.fields))


def _in_image(statement: Any, config: ModelAudit, image: sa.Table) -> Any:
    """``statement`` limited to the rows of the before-image in ``image``, as `_locked_only`
    limits it to those of a before-image in memory."""
    keys = sa.select(*(image.c[k] for k in config.primary_key))
    return statement.where(key_of(config, statement).in_(keys))
