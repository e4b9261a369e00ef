"""The rows an audited statement through a session may write, locked before it runs, and the
statement limited to them (PostgreSQL, READ COMMITTED): the rows of a table whose DELETE or
UPDATE reaches audited rows through foreign keys, before their dependents are read
(`dependents_of`); the refusal of an ORM bulk UPDATE by primary key naming a row that was not
there to lock (`refuse_absent_keys`); and a table's primary key in a statement's terms
(`key_of`, `table_key_of`), for ``key IN (...)``; an upsert's DO UPDATE limited to the rows
its read found (`upsert_limited`), and which rows this transaction wrote (`written_here`)."""

from __future__ import annotations

import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.exc import StaleDataError

from dalkit.audit.cascades import Dependents
from dalkit.audit.guard import unrecorded_allowed
from dalkit.audit.records import IN_CHUNK, temporary_table
from dalkit.audit.registry import ModelAudit

__all__ = ["add_by_keys", "dependents_of", "key_of", "refuse_absent_keys", "table_key_of"]


def dependents_of(state: ORMExecuteState, statement: Any, updating: bool) -> tuple[Dependents, Any]:
    """The audited rows that the DELETE (or the UPDATE of referenced keys) reaches through
    foreign keys, read before it runs, and the statement limited to the rows of its table that
    the read locked first (`Dependents.add`): a row that another transaction made match its
    WHERE in between would take along dependents that were not read. An ORM bulk UPDATE by
    primary key takes no further WHERE: the rows it names are locked (`_lock_named_keys`).

    Args:
        state: The statement's execution through a session.
        statement: The DELETE or UPDATE (``state``'s, or a copy of it already limited).
        updating: Whether it is an UPDATE (of keys ON UPDATE actions carry).

    Returns:
        The dependents read, to record once the statement has run, and the statement to run.
    """
    dependents = Dependents(refusing=not unrecorded_allowed())
    table = typing.cast("sa.Table", statement.table)
    params = state.parameters
    each = typing.cast("list[Mapping[str, Any]]", params if isinstance(params, list) else [params])
    by_primary_key = state.is_executemany and statement.whereclause is None
    if by_primary_key and state.bind_mapper is not None:
        _lock_named_keys(state, dependents, table, each, updating)
        return dependents, statement
    locked: list[Any] = []
    for one in each:
        keys = dependents.add(state.session, table, statement.whereclause, one, updating=updating)
        locked.append(keys)
    key = table_key_of(table, statement)
    if not state.is_executemany:
        return dependents, statement.where(key.in_(locked[0]))
    # an IN list cannot go with executemany: the keys of every parameter set go to a table
    connection = state.session.connection()
    names = [c.name for c in table.primary_key]
    keys_table = temporary_table(connection, [(c.name, c.type) for c in table.primary_key])
    for keys in locked:
        if isinstance(keys, list):
            rows = [dict(zip(names, k if len(names) > 1 else (k,), strict=True)) for k in keys]
            if rows:
                connection.execute(keys_table.insert(), rows)
        else:
            connection.execute(keys_table.insert().from_select(names, keys))
    dependents.drop_when_recorded(keys_table)
    return dependents, statement.where(key.in_(sa.select(*keys_table.c)))


def _lock_named_keys(
    state: ORMExecuteState,
    dependents: Dependents,
    table: sa.Table,
    params: Sequence[Mapping[str, Any]],
    updating: bool,
) -> None:
    """The dependents of an ORM bulk UPDATE by primary key: those of the rows its parameter
    sets name, locked first, in IN lists of `IN_CHUNK`. A key naming no row fails it
    (`refuse_absent_keys`): a row that another transaction inserted under it, with rows
    referencing it, and committed after the lock would carry the new key to them unrecorded,
    since the statement takes no further WHERE to leave it alone. (Before, the whole table was
    locked, and every dependent of it read, once for each parameter set.) SQLAlchemy refuses a
    bulk DELETE by primary key itself."""
    mapper = typing.cast("Any", state.bind_mapper)
    names = [mapper.get_property_by_column(c).key for c in table.primary_key]
    if any(name not in one for one in params for name in names):
        return  # SQLAlchemy refuses the statement before it sends anything
    keys = [tuple(one[name] for name in names) for one in params]
    found = add_by_keys(dependents, state.session, table, keys, updating=updating)
    if updating:
        refuse_absent_keys(table, keys, found)


def add_by_keys(
    dependents: Dependents,
    session: Session,
    table: sa.Table,
    keys: Sequence[tuple[Any, ...]],
    *,
    updating: bool,
) -> set[tuple[Any, ...]]:
    """Lock the rows of ``table`` that ``keys`` name, and read the audited rows their DELETE
    (or the UPDATE of their referenced keys) reaches, in IN lists of `IN_CHUNK`
    (`Dependents.add`).

    Args:
        dependents: Where the rows read go.
        session: The session writing.
        table: The table written.
        keys: Primary keys of ``table``, each a tuple.
        updating: Whether the write is an UPDATE.

    Returns:
        The keys the locked read found.
    """
    unique = list(dict.fromkeys(keys))
    pk = list(table.primary_key)
    target = pk[0] if len(pk) == 1 else sa.tuple_(*pk)
    found: set[tuple[Any, ...]] = set()
    for start in range(0, len(unique), IN_CHUNK):
        chunk = unique[start : start + IN_CHUNK]
        values = [k[0] for k in chunk] if len(pk) == 1 else chunk
        locked = dependents.add(session, table, target.in_(values), updating=updating)
        found.update(k if len(pk) > 1 else (k,) for k in locked or ())
    return found


def refuse_absent_keys(
    table: sa.Table, keys: Sequence[tuple[Any, ...]], found: Collection[tuple[Any, ...]]
) -> None:
    """An ORM bulk UPDATE by primary key naming a row that its locked read did not find fails,
    before anything is written, with the ``StaleDataError`` SQLAlchemy raises for a key that
    matched no row. Run as is, the statement would update such a row that another transaction
    inserted and committed after the read (READ COMMITTED), and nothing could record it: its
    values before the UPDATE (or its dependents) were never read, and a row that does not exist
    cannot be locked. Failing is what the statement does when run at the read (SQLAlchemy
    counts the rows it matched; on asyncpg, which counts none of an executemany, it would skip
    the key and write the others), and dalkit's retry takes ``StaleDataError`` as a conflict:
    a retried transaction finds the row and records its update.

    Args:
        table: The table updated.
        keys: The primary keys the statement's parameter sets name, one each.
        found: The keys the locked read found.

    Raises:
        StaleDataError: A key was not found.
    """
    matched = sum(1 for key in keys if key in found)
    if matched != len(keys):
        raise StaleDataError(
            f"UPDATE statement on table '{table.description}' expected to update {len(keys)} "
            f"row(s); {matched} were matched."
        )


def key_of(config: ModelAudit, statement: Any) -> Any:
    """The primary key of ``config``'s table as one expression, in the order of its keys'
    values (`ModelAudit.key_of`), in the terms of ``statement`` (`_key_in_terms_of`).

    Args:
        config: The audited model.
        statement: A statement on its table.

    Returns:
        A column, or a tuple of columns.
    """
    columns = dict(config.fields)
    return _key_in_terms_of(statement, [columns[name] for name in config.primary_key])


def table_key_of(table: sa.Table, statement: Any) -> Any:
    """`key_of` for a table that may not be audited: its primary key columns.

    Args:
        table: The table.
        statement: A statement on it.

    Returns:
        A column, or a tuple of columns.
    """
    return _key_in_terms_of(statement, list(table.primary_key))


def _key_in_terms_of(statement: Any, key: list[Any]) -> Any:
    """The ``key`` columns as one expression (a column, or their tuple) in the terms of
    ``statement``: an ORM statement's through the mapped attributes, which its
    ``synchronize_session="evaluate"`` can evaluate in Python."""
    mapper = statement._propagate_attrs.get("plugin_subject")
    if mapper is not None and all(c in mapper.columns.values() for c in key):
        key = [getattr(mapper.class_, mapper.get_property_by_column(c).key) for c in key]
    return key[0] if len(key) == 1 else sa.tuple_(*key)


def upsert_limited(statement: Any, config: ModelAudit, there: Collection[tuple[Any, ...]]) -> Any:
    """A PostgreSQL upsert whose DO UPDATE changes only the rows its locked read found (by
    their primary keys, ``there``): a row that another transaction inserted and committed
    under a conflicting key after that read, which the read could not lock, is left alone
    (as DO NOTHING leaves it), not updated and recorded as this write's creation.

    Args:
        statement: An INSERT, ON CONFLICT or not.
        config: Its audited model.
        there: The primary keys of the rows the read found.

    Returns:
        The statement to run: ``statement`` itself unless it does update on conflict.
    """
    clause = getattr(statement, "_post_values_clause", None)
    if getattr(clause, "update_values_to_set", None) is None:
        return statement
    columns = dict(config.fields)
    key = [columns[name] for name in config.primary_key]
    # one bound parameter a value, not an expanding IN list, which executemany cannot take
    values = [
        sa.tuple_(*(sa.literal(v, c.type) for v, c in zip(k, key, strict=True))) for k in there
    ]
    found = sa.tuple_(*key).in_(values) if values else sa.false()
    limited = typing.cast("Any", clause)._clone()
    old = limited.update_whereclause
    limited.update_whereclause = found if old is None else sa.and_(old, found)
    statement = statement._generate()
    statement._post_values_clause = limited
    return statement


#: the (sub)transaction that wrote a row's version, as a full 64-bit transaction id: ``xmin``
#: holds its low 32 bits, and it lies within 2^31 of this transaction's own id
_WRITER_STATUS: sa.ColumnElement[str] = sa.literal_column(
    "pg_xact_status((pg_current_xact_id()::text::bigint"
    " + ((((xmin::text::bigint - pg_current_xact_id()::text::bigint) & 4294967295)"
    " + 2147483648) & 4294967295) - 2147483648)::text::xid8)"
)


def written_here(
    session: Any, config: ModelAudit, rows: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The ``rows`` (by primary key) whose version this transaction wrote (PostgreSQL): found
    after an upsert, and not by its locked read before, a row is its creation only when it
    wrote it; one that another transaction inserted and committed in between, which the
    upsert left alone, is not. A version that the statement's snapshot sees and whose writer
    is still in progress is this transaction's (its savepoints' included).

    Args:
        session: The session whose transaction wrote.
        config: The audited model.
        rows: Rows of its table, read after the upsert.

    Returns:
        Those of ``rows`` this transaction wrote.
    """
    if not rows or session.connection().dialect.name != "postgresql":
        return list(rows)
    columns = dict(config.fields)
    key = [columns[name] for name in config.primary_key]
    target = key[0] if len(key) == 1 else sa.tuple_(*key)
    by_key = {config.key_of(r): r for r in rows}
    values = [k[0] for k in by_key] if len(key) == 1 else list(by_key)
    query = sa.select(*key, _WRITER_STATUS).where(target.in_(values))
    found = session.connection().execute(query).all()
    mine = {tuple(r[:-1]) for r in found if r[-1] == "in progress"}
    return [r for k, r in by_key.items() if k in mine]
