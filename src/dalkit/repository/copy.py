"""Bulk loading: rows checked and turned into driver tuples (`dalkit.repository.copy_driver`
has the driver calls that move them: binary COPY on PostgreSQL).

The repositories own the transaction handling around these: one savepoint for the whole load and
one per chunk, so that a bad row can be found by bisection and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import Dialect

from dalkit.errors import (
    BulkLoadError,
    ConfigurationError,
    ConnectionFailedError,
    ConnectionLostError,
    DatabaseError,
    PoolTimeoutError,
    StatementTimeoutError,
    TransientError,
)
from dalkit.query.fields import FieldInfo, ModelInfo
from dalkit.query.inputs import refusal
from dalkit.repository.ranges import check_integer_ranges
from dalkit.repository.versions import bump_sets
from dalkit.secret_names import masked_values

__all__ = [
    "COLUMN_TYPES_SQL",
    "BulkPlan",
    "check_chunk_size",
    "check_first_row",
    "check_row_shape",
    "duplicate_key_error",
    "is_row_error",
    "plan_bulk",
    "progress_bar",
]

#: the type OID of each column of the table named ``:table`` (PostgreSQL), a domain's followed
#: down to its base type (through a domain over a domain too), whose binary form it shares
COLUMN_TYPES_SQL = """\
WITH RECURSIVE types(attname, oid, base) AS (
    SELECT a.attname, a.atttypid, t.typbasetype FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT types.attname, types.base, t.typbasetype FROM types JOIN pg_type t ON t.oid = types.base
)
SELECT attname, oid::int FROM types WHERE base = 0"""

#: rows per chunk when the caller does not say; each chunk is one COPY or executemany
DEFAULT_CHUNK_SIZE = 10_000


@dataclasses.dataclass(frozen=True, eq=False)
class BulkPlan:
    """Which columns a bulk operation writes, in which order, and the SQL that writes them."""

    info: ModelInfo
    fields: tuple[FieldInfo, ...]
    key_count: int  # the leading fields that come from the caller's rows; the rest are defaults
    defaults: tuple[Callable[[], Any], ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    dialect: str
    update_keys: tuple[FieldInfo, ...] = ()  # bulk_update: the primary key, matched not set

    @property
    def table(self) -> sa.Table:
        return self.info.table

    @property
    def column_names(self) -> list[str]:
        return [f.column.name for f in self.fields]

    def tuples(
        self, rows: Iterable[Any], *, check_ranges: bool = True
    ) -> tuple[list[Any], list[tuple[Any, ...]]]:
        """The caller's rows (kept to name a bad one) and the tuples the driver gets;
        ``check_ranges=False`` leaves integer bounds to a driver that refuses what does not fit.

        Written for speed, as it touches every value of a load: comprehensions and one
        ``itemgetter`` call per row; only when that fails is each row examined to name it.
        """
        originals = list(rows)
        names = [f.name for f in self.fields[: self.key_count]]
        count = len(names)
        pick = operator.itemgetter(*names)
        try:
            out: list[Any] = list(map(pick, originals))
            # one C-speed pass: a generator per row cost 0.04 s per 100k rows (bench/peers bulk)
            shaped = set(map(len, originals)) <= {count}
        except (KeyError, TypeError):
            shaped = False
        if not shaped:
            for index, row in enumerate(originals):
                check_row_shape(index, row, names)
        if count == 1:
            out = [(value,) for value in out]
        if self.defaults:
            defaults = self.defaults
            out = [(*values, *(make() for make in defaults)) for values in out]
        for at, process in enumerate(self.processors):
            if process is not None:
                try:
                    out = [(*v[:at], process(v[at]), *v[at + 1 :]) for v in out]
                except (TypeError, ValueError, OverflowError) as exc:
                    raise _refused_value(self, originals, out, at) from exc
        if check_ranges:
            check_integer_ranges(self.fields, originals, out)
        return originals, out

    def check_distinct_keys(
        self, originals: Sequence[Any], tuples: Sequence[tuple[Any, ...]]
    ) -> None:
        """Refuses a bulk update naming one primary key in two rows, naming the later: SQLite
        applied both (the last won), PostgreSQL's UPDATE ... FROM its staging table one of
        them, arbitrarily. C-speed passes over the keys: ~3 ms per 100k rows."""
        at = [i for i, f in enumerate(self.fields) if f in self.update_keys]
        keys = list(map(operator.itemgetter(*at), tuples))
        try:
            if len(set(keys)) == len(keys):
                return
        except TypeError:  # an unhashable value: named below
            pass
        first: dict[Any, int] = {}
        for index, key in enumerate(keys):
            try:
                earlier = first.setdefault(key, index)
            except TypeError as exc:
                raise row_error(index, originals[index], exc) from exc
            if earlier != index:
                raise duplicate_key_error(self.info, index, originals[index], earlier)

    def insert_sql(self, dialect: Dialect) -> str:
        """``INSERT INTO t (a, b) VALUES (?, ?)`` with the columns in tuple order, for SQLite's
        drivers (both use the qmark parameter style)."""
        quote = dialect.identifier_preparer.quote
        table = dialect.identifier_preparer.format_table(self.table)
        columns = ", ".join(quote(f.column.name) for f in self.fields)
        marks = ", ".join("?" for _ in self.fields)
        return f"INSERT INTO {table} ({columns}) VALUES ({marks})"

    def update_sql(self, dialect: Dialect) -> str:
        """``UPDATE t SET a = ?, b = ? WHERE pk = ?`` for SQLite, values ordered like the tuples
        with the key moved last: see `update_tuple_order()`."""
        quote = dialect.identifier_preparer.quote
        table = dialect.identifier_preparer.format_table(self.table)
        keys = {id(f) for f in self.update_keys}
        sets = [f"{quote(f.column.name)} = ?" for f in self.fields if id(f) not in keys]
        where = " AND ".join(f"{quote(f.column.name)} = ?" for f in self.update_keys)
        bump = bump_sets(self.info, self.fields, quote, "")
        return f"UPDATE {table} SET {', '.join([*sets, *bump])} WHERE {where}"

    def update_tuple_order(self) -> list[int]:
        keys = {id(f) for f in self.update_keys}
        first = [i for i, f in enumerate(self.fields) if id(f) not in keys]
        return first + [i for i, f in enumerate(self.fields) if id(f) in keys]

    def staging_name(self) -> str:
        """The staging table of a PostgreSQL bulk update of these columns of this table.

        Named after them, not at random: so each statement has one shape in the query
        statistics, where random names would fill the bounded list with shapes run once. A
        temporary table is the session's own, so no other connection shares it."""
        key = f"{self.table.fullname}|{','.join(self.column_names)}".encode()
        return f"_dalkit_bulk_{hashlib.blake2b(key, digest_size=6).hexdigest()}"

    def staging_sql(self, dialect: Dialect, name: str) -> tuple[str, str, str, str]:
        """PostgreSQL bulk update through a staging table ``name``: the statements that create
        it (same column types; kept if a failed update earlier in the transaction left it),
        empty it, update the target from it, and drop it."""
        quote = dialect.identifier_preparer.quote
        table = dialect.identifier_preparer.format_table(self.table)
        columns = ", ".join(quote(f.column.name) for f in self.fields)
        keys = {id(f) for f in self.update_keys}
        named = [quote(f.column.name) for f in self.fields if id(f) not in keys]
        bump = bump_sets(self.info, self.fields, quote, "t.")
        sets = ", ".join([*(f"{n} = s.{n}" for n in named), *bump])
        where = " AND ".join(
            f"t.{quote(f.column.name)} = s.{quote(f.column.name)}" for f in self.update_keys
        )
        return (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ON COMMIT DROP AS "
            f"SELECT {columns} FROM {table} WITH NO DATA",
            f"TRUNCATE {name}",
            f"UPDATE {table} AS t SET {sets} FROM {name} AS s WHERE {where}",
            f"DROP TABLE IF EXISTS {name}",
        )


def check_first_row(info: ModelInfo, first_row: Any, *, update: bool = False) -> list[FieldInfo]:
    """The fields ``first_row`` names (every row of a bulk call names the same): known ones,
    and for an update the primary key and at least one field to set; none it leaves out may
    have a client-side default that only SQLAlchemy's statements produce (`_check_defaults`)."""
    if not isinstance(first_row, Mapping):
        raise BulkLoadError(
            f"row 0 is a {type(first_row).__name__}, not a mapping", row_index=0, row=first_row
        )
    unknown = [k for k in first_row if k not in info.fields]
    if unknown:
        raise BulkLoadError(
            f"row 0 names unknown field(s) {', '.join(map(repr, unknown))}; "
            f"{info.name} has {', '.join(info.fields)}",
            row_index=0,
            row=first_row,
        )
    fields = [info.fields[k] for k in first_row]
    if update:
        missing = [f.name for f in info.primary_key if f not in fields]
        if missing or len(fields) == len(info.primary_key):
            raise BulkLoadError(
                f"bulk_update rows need the primary key "
                f"({', '.join(f.name for f in info.primary_key)}) and at least one field to set",
                row_index=0,
                row=first_row,
            )
    _check_defaults(info, fields, first_row, update=update)
    return fields


def _check_defaults(
    info: ModelInfo, given: Sequence[FieldInfo], first_row: Any, *, update: bool
) -> None:
    """Refuses a load leaving out a field whose default (``update``: onupdate) is a SQL
    expression or a function of the statement's context: COPY and the in-memory repository
    cannot produce it, and leaving the column out stored NULL where add() stores the default
    (an update left the column as it was, where update_many runs the onupdate)."""
    for field in info.fields.values():
        reason = field.unevaluated_default(update=update)
        if reason is None or field in given:
            continue
        verb, other = ("bulk_update", "update_many") if update else ("bulk_insert", "add_many")
        name = field.name
        raise BulkLoadError(
            f"{verb} cannot produce the {'onupdate' if update else 'default'} of "
            f"{info.name}.{name} ({reason}) for each row: give {name} in every row, "
            f"or use {other}",
            row_index=0,
            row=first_row,
        )


def check_row_shape(index: int, row: Any, names: Sequence[str]) -> None:
    """Refuses a row that does not name exactly the fields of row 0."""
    if not isinstance(row, Mapping) or len(row) != len(names) or any(n not in row for n in names):
        raise _shape_error(index, row, names)


def check_chunk_size(chunk_size: object) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError("chunk_size must be a positive integer")
    return chunk_size


def plan_bulk(
    info: ModelInfo, first_row: Any, dialect: Dialect, *, update: bool = False
) -> BulkPlan:
    """The plan for rows shaped like ``first_row``: its keys, then the columns with
    Python-side defaults (``update``: onupdate, as update_many and upsert run them) that it
    leaves out."""
    fields = check_first_row(info, first_row, update=update)
    defaults: list[Callable[[], Any]] = []
    key_count = len(fields)
    for field in info.fields.values():
        make = field.python_default(update=update)
        if field not in fields and make is not None:
            fields.append(field)
            defaults.append(make)
    processors = tuple(_processor(f, dialect) for f in fields)
    return BulkPlan(
        info,
        tuple(fields),
        key_count,
        tuple(defaults),
        processors,
        dialect.name,
        info.primary_key if update else (),
    )


_PROBE = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)


def _processor(field: FieldInfo, dialect: Dialect) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor for the column (None values pass through unchanged)."""
    impl = field.column.type.dialect_impl(dialect)
    if dialect.driver == "asyncpg" and hasattr(impl, "unchecked_bind_processor"):
        # the load has checked each value before sending it (an int, within its column's
        # range: values.coerce_rows and the too-wide check): a Python call per value to check
        # it again took the async 100k-row load from 0.96x to 0.53x of asyncpg's own COPY
        # (python -m bench peers, 2026-12-07)
        return impl.unchecked_bind_processor(dialect)  # type: ignore[no-any-return]
    process = impl.bind_processor(dialect)
    if process is None or field.kind != "datetime":
        return process
    if process(_PROBE) != _PROBE.isoformat(" ", "microseconds"):
        return process
    slow = process

    # SQLite stores datetimes as text; this is SQLAlchemy's default format (checked above),
    # written in C by isoformat instead of field by field in Python: 3x faster on bulk loads
    def fast(value: Any) -> Any:
        if type(value) is dt.datetime and value.tzinfo is None and value.year >= 1000:
            return value.isoformat(" ", "microseconds")
        return slow(value)

    return fast


def _refused_value(
    plan: BulkPlan, originals: Sequence[Any], values: Sequence[tuple[Any, ...]], at: int
) -> BulkLoadError:
    """The first row whose value at ``at`` the column type's bind processor refuses (a string
    for a SQLite DateTime), named with its field: not a raw TypeError."""
    process, field = plan.processors[at], plan.fields[at]
    assert process is not None
    for index, row in enumerate(values):
        try:
            process(row[at])
        except (TypeError, ValueError, OverflowError) as exc:
            return row_error(index, originals[index], refusal(field.name, field, exc))
    raise AssertionError("a processor refused a value, then none")  # pragma: no cover


def _shape_error(index: int, row: Any, names: Sequence[str]) -> BulkLoadError:
    return BulkLoadError(
        f"row {index} does not have the fields of row 0 ({', '.join(names)}): {_show(row)}",
        row_index=index,
        row=row,
    )


def duplicate_key_error(info: ModelInfo, index: int, row: Any, earlier: int) -> BulkLoadError:
    names = ", ".join(f.name for f in info.primary_key)
    return BulkLoadError(
        f"row {index} has the primary key ({names}) of row {earlier}: a bulk_update sets each "
        f"row once -- row: {_show(row)}",
        row_index=index,
        row=row,
    )


def _show(row: Any) -> str:
    shown = masked_values(row) if isinstance(row, Mapping) else row  # its secrets: ***
    return text if len(text := repr(shown)) <= 200 else text[:197] + "..."


def row_error(index: int, row: Any, cause: BaseException | str) -> BulkLoadError:
    return BulkLoadError(
        f"row {index} cannot be written: {cause} -- row: {_show(row)}", row_index=index, row=row
    )


def is_row_error(exc: BaseException) -> bool:
    """Whether ``exc`` may come from the data (worth finding the row) rather than from the
    connection, the server or a timeout, where retrying row by row would only repeat it."""
    not_rows = (
        TransientError,
        ConnectionLostError,
        ConnectionFailedError,
        StatementTimeoutError,
        PoolTimeoutError,
    )
    return isinstance(
        exc, DatabaseError | TypeError | ValueError | OverflowError
    ) and not isinstance(exc, not_rows)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar advanced by the function it yields; a no-op when not ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    try:
        from rich.progress import Progress
    except ImportError:
        raise ConfigurationError(
            "progress=True needs Rich; install it with pip install 'dalkit[cli]'"
        ) from None
    # refreshed by hand at each chunk: no background thread to outlive a failed load
    with Progress(auto_refresh=False, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def advance(count: int) -> None:
            progress.advance(task, count)
            progress.refresh()

        yield advance
