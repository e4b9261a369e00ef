"""Lean plain reads on asyncpg: the compiled SELECT of a plain read made before anything began
(`dalkit.query.plain_entities`) run on a pooled connection's cursor without SQLAlchemy's
Connection, execution context and cursor result. Measured: the read itself 243 -> 163 us of
CPU (/work/prof23/lean/micro.py, paired medians 0.65-0.75 over three runs), and bench/peers'
async get by id, 32 tasks over a pool of 8, 355 -> 304, 385 -> 336, 359 -> 330 and 340 -> 302
us of CPU per request (/work/prof23/lean/case.py, four interleaved runs, lean read on / off).

It keeps what SQLAlchemy's execution does for such a read, step by step, with SQLAlchemy's own
objects where it can:

- the connection comes from ``engine.raw_connection()`` as ``Connection`` takes it (pre-ping,
  recycle, the pool's events, a failed connect handled as ``Connection`` handles it), and goes
  back after the ROLLBACK that closing the Connection's autobegun transaction sends;
- the statement is compiled through the engine's compiled cache as ``Connection.execute``
  compiles it, and its parameters built the same way (``construct_params``, each column
  type's bind processor);
- the statement runs through the dialect's ``do_execute``, so dalkit's statement hooks (the
  deferred BEGIN, query statistics, metrics, slow-query log, budgets, the audit and tenant
  guards, the query cache, max_queries) see the same SQL text, parameters and timing, given a
  stand-in context (see `dalkit.engine.lean_served`);
- a failure goes to ``Connection._handle_dbapi_exception`` (on a Connection made around the
  pooled connection then) with the arguments SQLAlchemy gives it: the same ``handle_error``
  listeners (dalkit's error translation), disconnect invalidation, and cancellation;
- the rows get each column type's result processor, the one SQLAlchemy would take (the
  compiled statement's cached result metadata, or the type's for the column's driver type).

It does not run (the caller takes SQLAlchemy's path) unless all of this holds: the dialect is
SQLAlchemy's asyncpg one, unchanged; no echo; no ``engine_connect``, ``begin``, ``rollback``,
``before_execute``, ``after_execute``, ``before_cursor_execute`` or ``after_cursor_execute``
listener, no dialect ``do_execute*`` listener, and every ``handle_error`` listener and dalkit
statement hook is one marked `serves_lean`; the engine has no execution option but dalkit's
deferred BEGIN; the compiled statement is a positional SELECT whose columns match the
cursor's one to one, with no expanding, literal-execute or schema-translated parts.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sqlalchemy.dialects.postgresql.asyncpg import PGExecutionContext_asyncpg
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.default import DefaultDialect, DefaultExecutionContext
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.sql import compiler

from dalkit.engine.lean_served import all_lean_served
from dalkit.engine.statement_hooks import hooks_for
from dalkit.transaction.deferred import DEFERRED_BEGIN_OPTION

__all__ = ["COUNTED_PER_TRANSACTION", "read_rows", "rows_of"]

#: Engine execution option, true while something counts an engine's statements per transaction
#: of its connections (N+1 detection): a read before anything began then stays on the
#: session's connection, where the count sees the transaction's reads together.
COUNTED_PER_TRANSACTION = "dalkit_counted_per_transaction"
# the engine execution options a lean read may run under
_LEAN_OPTIONS = frozenset({DEFERRED_BEGIN_OPTION, COUNTED_PER_TRANSACTION})
# the SQLAlchemy methods the lean read stands in for: a dialect or context class overriding
# one does more than the lean read does
_UNCHANGED = all(
    getattr(PGExecutionContext_asyncpg, name) is getattr(DefaultExecutionContext, name)
    for name in ("post_exec", "get_result_processor", "create_default_cursor")
)
# compiled statement -> (column indexes, their result processors) per column list
_PICKS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
# compiled statements whose cursor columns did not match their result columns one to one
_REFUSED: weakref.WeakSet[Any] = weakref.WeakSet()


class _Connection:
    """What dalkit's statement hooks read of an execution's ``root_connection``: the pooled
    connection, the dialect and engine, the execution options."""

    __slots__ = ("connection", "dialect", "engine")
    _allow_autobegin = True  # what dalkit's statement hooks take for "an execution's"

    def __init__(self, engine: Engine, fairy: Any) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.connection = fairy

    @property
    def default_isolation_level(self) -> Any:
        """As ``Connection.default_isolation_level``: the dialect's."""
        return self.dialect.default_isolation_level

    @property
    def info(self) -> Any:
        """As ``Connection.info``: the pooled connection's."""
        return self.connection.info

    def get_execution_options(self) -> Any:
        """As ``Connection.get_execution_options``: the engine's (none of the statement's)."""
        return self.engine._execution_options


class _Context:
    """What dalkit's statement hooks and ``handle_error`` listeners read of an execution
    context (`dalkit.engine.lean_served`), and the asyncpg context's error step."""

    __slots__ = (
        "compiled",
        "cursor",
        "dialect",
        "execution_options",
        "parameters",
        "root_connection",
        "statement",
    )
    executemany = False
    _is_server_side = False
    isddl = isinsert = isupdate = isdelete = False  # a SELECT

    def __init__(
        self, connection: _Connection, compiled: Any, options: Any, statement: str, params: Any
    ) -> None:
        self.root_connection = connection
        self.dialect = connection.dialect
        self.compiled = compiled
        self.execution_options = options
        self.statement = statement
        self.parameters = [params]
        self.cursor: Any = None

    def handle_dbapi_exception(self, error: BaseException) -> None:
        """What the asyncpg context does with a driver error (forget the schema cache)."""
        handle: Any = PGExecutionContext_asyncpg.handle_dbapi_exception
        handle(self, error)


def read_rows(
    engine: Engine, statement: Any, params: Mapping[str, Any] | None, columns: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """The values of ``columns`` in each row of ``statement``, read on a connection of its own
    as ``with engine.connect() as c: c.execute(statement, params)`` reads them, leanly when
    that gives the same (see the module docstring).

    Args:
        engine: The (sync) engine.
        statement: A select of ``columns`` (and maybe more).
        params: Its bound parameters.
        columns: The columns wanted, in the order of each tuple.

    Returns:
        One tuple per row.
    """
    if not isinstance(params, dict | None) or not _lean_ready(engine):
        return _read(engine, statement, params, columns)
    dialect: Any = engine.dialect
    options = statement._execution_options.merge_with(engine._execution_options, {})
    compiled, extracted, collected, _ = statement._compile_w_cache(
        dialect=dialect,
        compiled_cache=options.get("compiled_cache", engine._compiled_cache),
        column_keys=sorted(params) if params else [],
        for_executemany=False,
        schema_translate_map=None,
        linting=dialect.compiler_linting | compiler.WARN_LINTING,
    )
    if compiled in _REFUSED or not _lean_compiled(compiled):
        return _read(engine, statement, params, columns)
    sql = compiled.string
    distilled = [] if params is None else [params]  # SQLAlchemy's _distill_params_20
    try:  # Connection.__init__
        fairy: Any = engine.raw_connection()
    except dialect.loaded_dbapi.Error as error:
        Connection._handle_dbapi_exception_noconnection(error, dialect, engine)
        raise
    try:
        # DefaultExecutionContext._init_compiled, for one parameter set
        values = compiled.construct_params(
            params,
            escape_names=False,
            _group_number=0 if distilled else None,
            extracted_parameters=extracted,
            _collected_params=collected,
        )
        cursor: Any = fairy.cursor()  # create_default_cursor, between the two as there
        processors = compiled._bind_processors
        bound = dialect.execute_sequence_format(
            [
                processors[key](values[key]) if key in processors else values[key]
                for key in compiled.positiontup
            ]
        )
    except BaseException as error:  # as Connection._execute_context's: before the autobegin
        _failed(engine, fairy, error, (sql, distilled, None, None), begun=False)
    # the autobegin: no begin listener (_lean_ready) and do_begin does nothing
    context = _Context(_Connection(engine, fairy), compiled, options, sql, bound)
    context.cursor = cursor
    # PGExecutionContext_asyncpg.pre_exec
    cursor._invalidate_schema_cache_asof = dialect._invalidate_schema_cache_asof
    try:
        dialect.do_execute(cursor, sql, bound, context)
        picks = _picks(compiled, cursor.description, columns, dialect)
        raw = cursor.fetchall()
        cursor.close()
    except BaseException as error:
        _failed(engine, fairy, error, (sql, bound, cursor, context), begun=True)
    try:  # Connection.close: its transaction's rollback, then back to the pool unreset
        dialect.do_rollback(fairy)
    except BaseException as error:
        _failed(engine, fairy, error, (None, None, None, None), begun=True)
    fairy._close_special(transaction_reset=True)
    if picks is None:
        # the cursor's columns do not match the compiled ones by position (never seen: a
        # select of one plain model): this once it runs again, SQLAlchemy's way, as it will
        # from now on
        _REFUSED.add(compiled)
        return _read(engine, statement, params, columns)
    return [tuple([p(row[i]) if p else row[i] for i, p in picks]) for row in raw]


def _read(
    engine: Engine, statement: Any, params: Any, columns: Sequence[Any]
) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return rows_of(connection.execute(statement, params), columns)


def _failed(
    engine: Engine, fairy: Any, error: BaseException, where: tuple[Any, ...], begun: bool
) -> NoReturn:
    """Raise what SQLAlchemy's execution raises for ``error``, having done what it does (its
    ``handle_error`` listeners, invalidation): on a Connection around ``fairy``, in its
    autobegun transaction when ``begun``, closed as the caller's ``with`` closes it."""
    connection = Connection(engine, connection=fairy)
    try:
        if begun:
            connection.begin()
        statement, parameters, cursor, context = where
        connection._handle_dbapi_exception(error, statement, parameters, cursor, context)
    finally:
        connection.close()


def rows_of(result: Any, columns: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The values of ``columns`` in each row of ``result``.

    Args:
        result: A CursorResult.
        columns: Columns it selected.

    Returns:
        One tuple per row.
    """
    values_of = result._tuple_getter(columns)
    return [tuple(values_of(row)) for row in result.all()]


def _lean_ready(engine: Engine) -> bool:
    """Whether nothing that listens to or changes a statement's execution is in place but what
    the lean read serves (see the module docstring)."""
    dialect: Any = engine.dialect
    if (
        not _UNCHANGED
        or dialect.driver != "asyncpg"
        or dialect.execution_ctx_cls is not PGExecutionContext_asyncpg
        or dialect.bind_typing is BindTyping.SETINPUTSIZES
        or dialect.server_side_cursors
        or engine._should_log_info()
        or getattr(dialect.do_begin, "__func__", None) is not DefaultDialect.do_begin
    ):
        return False
    options = engine._execution_options
    if not _LEAN_OPTIONS.issuperset(options) or options.get(COUNTED_PER_TRANSACTION):
        return False
    # SQLAlchemy sets _has_events on an engine (or its class) at its first connection event
    # listener and never unsets it: the seven checks below run only then. They cost 5.8 us a
    # read on an execution_options() engine, whose dispatch makes a joined listener each time;
    # this whole check went 16.8 -> 3.7 us (/work/prof23/lean/tready*.py, timeit, min of 5-7)
    if Connection._has_events or engine._has_events:
        events: Any = engine.dispatch
        if (
            events.engine_connect
            or events.begin
            or events.rollback
            or events.before_execute
            or events.after_execute
            or events.before_cursor_execute
            or events.after_cursor_execute
        ):
            return False
    if dialect._has_events:
        events = dialect.dispatch
        if (
            events.do_execute
            or events.do_execute_no_params
            or events.do_executemany
            or events.do_setinputsizes
            or not all_lean_served(events.handle_error)
        ):
            return False
    hooks = hooks_for(dialect)
    return (
        all_lean_served(hooks.after)
        and all_lean_served(hooks.before)
        and all_lean_served(hooks.timers)
        and all_lean_served(hooks.failed)
    )


def _lean_compiled(compiled: Any) -> bool:
    """Whether SQLAlchemy's execution of ``compiled`` is what the lean read does: a positional
    SELECT, its result columns matched to the cursor's by position."""
    return bool(
        compiled.positional
        and compiled.positiontup is not None
        and not compiled.literal_execute_params
        and not compiled.post_compile_params
        and not compiled.schema_translate_map
        and not (compiled.isinsert or compiled.isupdate or compiled.isdelete)
        and not compiled.isplaintext
        and not (compiled.insert_prefetch or compiled.update_prefetch)
        and compiled._result_columns
        and compiled._ordered_columns
        and not compiled._textual_ordered_columns
    )


def _picks(
    compiled: Any, description: Any, columns: Sequence[Any], dialect: Any
) -> tuple[tuple[int, Any], ...] | None:
    """For each of ``columns``, its index in the rows and the result processor SQLAlchemy's
    cursor result gives it; None when that result would not match columns by position."""
    result_columns = compiled._result_columns
    if description is None or len(description) != len(result_columns):
        return None
    key = (tuple(columns), tuple(entry[1] for entry in description))
    known = _PICKS.get(compiled)
    if known is not None and key in known:
        return known[key]  # type: ignore[no-any-return]
    cached = compiled._cached_metadata
    if cached is not None and cached._tuplefilter is None:
        processors = list(cached._processors)  # the metadata SQLAlchemy reuses for it
    else:  # what CursorResultMetaData's positional match computes
        processors = [
            entry[3]._cached_result_processor(dialect, description[index][1])
            for index, entry in enumerate(result_columns)
        ]
    picks: list[tuple[int, Any]] = []
    for column in columns:
        found = [i for i, entry in enumerate(result_columns) if column in entry[2]]
        if len(found) != 1:
            return None
        picks.append((found[0], processors[found[0]]))
    made = tuple(picks)
    _PICKS.setdefault(compiled, {})[key] = made
    return made
