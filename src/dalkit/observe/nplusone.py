"""N+1 detection: a relationship lazily loaded from several instances of one query result,
and one statement shape run again and again in a transaction with only its parameters changing.

Both rules are fed by synchronous SQLAlchemy listeners (the observer's), so they serve sync and
async code alike; under asyncio a lazy load outside SQLAlchemy's greenlet (a relationship's,
or an expired or deferred column's) becomes an ``NPlusOneError`` that says what to load instead
of ``MissingGreenlet``. Unused eager loads are
``dalkit.observe.eager``'s.
"""

from __future__ import annotations

import contextvars
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.orm import ORMExecuteState

from dalkit.errors import ConfigurationError
from dalkit.observe._source import caller_location, format_location
from dalkit.observe.errors import NPlusOneError, NPlusOneWarning
from dalkit.observe.shapes import StatementShape

__all__ = ["MODES", "BATCHED", "NPlusOneDetector", "NPlusOneMode", "refuse_async_column_load"]

NPlusOneMode = Literal["off", "warn", "raise"]
"""What N+1 detection does on a pattern: nothing, warn (`NPlusOneWarning`) or raise."""
MODES: tuple[NPlusOneMode, ...] = ("off", "warn", "raise")

#: lazy loads of one relationship from this many instances of one result are an N+1
LAZY_THRESHOLD = 2
#: execution option set on a lazy load already reported, so the shape rule skips it
REPORTED = "dalkit_nplusone_reported"
#: execution option of an eager load and of a read of a full chunk of keys (``get_many`` and
#: ``update_many`` send one per chunk): a batched read, which the shape rule never counts
BATCHED = "dalkit_nplusone_batched"
_SHAPES_KEY = "dalkit_nplusone_shapes"
_GROUPS_KEPT = 1024

# observer id -> mode, for detect_nplusone() blocks; per thread and per task
_overrides: contextvars.ContextVar[Mapping[int, NPlusOneMode] | None] = contextvars.ContextVar(
    "dalkit_nplusone_overrides", default=None
)


def check_mode(mode: object) -> NPlusOneMode:
    """``mode`` if it is ``"off"``, ``"warn"`` or ``"raise"``; else a ConfigurationError."""
    if mode not in MODES:
        raise ConfigurationError(f"nplusone must be one of 'off', 'warn', 'raise'; got {mode!r}")
    return mode  # type: ignore[return-value,unused-ignore]


def _in_greenlet() -> bool:
    try:
        from sqlalchemy.util.concurrency import in_greenlet
    except ImportError:  # pragma: no cover - SQLAlchemy without asyncio support
        return False
    return bool(in_greenlet())


def refuse_async_column_load(state: ORMExecuteState) -> None:
    """An expired or deferred column about to be loaded (``do_orm_execute``): async code
    outside SQLAlchemy's greenlet cannot, so say what to do before the driver fails.

    Args:
        state: The load's execute state.

    Raises:
        NPlusOneError: When the load runs outside the greenlet.
    """
    if _in_greenlet():
        return
    refreshed = getattr(state.load_options, "_refresh_state", None)
    mapper = state.bind_mapper
    model = mapper.class_.__name__ if mapper is not None else "the entity"
    names = sorted(getattr(refreshed, "expired_attributes", ())) or ["<name>"]
    what = f"{model}.{names[0]} is" if len(names) == 1 else f"{model}.{{{', '.join(names)}}} are"
    raise NPlusOneError(
        f"{what} not loaded (expired by a commit, rollback or expire(), or deferred), and "
        f"async code cannot load {'it' if len(names) == 1 else 'them'} lazily (at "
        f"{format_location(caller_location())}); await session.refresh(obj) first, or await "
        f"obj.awaitable_attrs.{names[0]}"
    )


class NPlusOneDetector:
    """Counts lazy loads per query result and statement shapes per transaction, and reports
    (warns or raises) the first time a count reaches its threshold.

    Args:
        mode: ``"off"``, ``"warn"`` or ``"raise"``.
        threshold: Runs of one statement shape in a transaction that make an N+1.

    Raises:
        ConfigurationError: A mode or threshold out of range.
    """

    def __init__(self, mode: NPlusOneMode = "off", threshold: int = 10) -> None:
        if not isinstance(threshold, int) or threshold < 2:
            raise ConfigurationError("nplusone_threshold must be an integer of at least 2")
        self.mode = check_mode(mode)
        self.threshold = threshold
        self.detections = 0
        self._lock = threading.Lock()
        # (query run id, model, relationship) -> ids of the instances it was loaded from
        self._groups: OrderedDict[tuple[int, type[Any], str], set[int]] = OrderedDict()

    def current_mode(self) -> NPlusOneMode:
        """The mode in force in this thread or task (a ``scoped()`` block's, else ``mode``)."""
        overrides = _overrides.get()
        return self.mode if overrides is None else overrides.get(id(self), self.mode)

    @contextmanager
    def scoped(self, mode: NPlusOneMode) -> Iterator[None]:
        """``mode`` inside the block, for this thread or task only.

        Args:
            mode: ``"off"``, ``"warn"`` or ``"raise"``.

        Raises:
            ConfigurationError: ``mode`` is none of those.
        """
        check_mode(mode)
        token = _overrides.set({**(_overrides.get() or {}), id(self): mode})
        try:
            yield
        finally:
            _overrides.reset(token)

    # -- rule 1: lazy loads from one result --------------------------------------------------
    def on_lazy_load(self, state: ORMExecuteState, is_async: bool) -> None:
        """A lazy load is about to run (``do_orm_execute``): count it, report an N+1.

        Raises:
            NPlusOneError: Under ``"raise"``, at the threshold; and for a lazy load that
                async code cannot run.
        """
        origin = state.lazy_loaded_from
        if origin is None:
            return
        path = state.loader_strategy_path
        prop = path.path[-1] if path is not None and path.path else None
        key = getattr(prop, "key", "?")
        model = origin.class_
        if is_async and not _in_greenlet():
            raise NPlusOneError(
                f"{model.__name__}.{key} is not loaded, and async code cannot load it lazily "
                f"(at {format_location(caller_location())}); load it with the query: "
                f'load=["{key}"] or selectinload({model.__name__}.{key}), or await '
                f"obj.awaitable_attrs.{key}"
            )
        mode = self.current_mode()
        if mode == "off" or origin.runid is None:
            return
        group = (origin.runid, model, key)
        with self._lock:
            instances = self._groups.get(group)
            if instances is None:
                if len(self._groups) >= _GROUPS_KEPT:
                    self._groups.popitem(last=False)
                instances = self._groups[group] = set()
            already = len(instances) >= LAZY_THRESHOLD
            instances.add(id(origin))
            count = len(instances)
        if already:
            state.update_execution_options(**{REPORTED: True})
        elif count >= LAZY_THRESHOLD:
            state.update_execution_options(**{REPORTED: True})
            self._report(
                mode,
                f"{model.__name__}.{key} lazily loaded for {count} {model.__name__} instances "
                f"of one query result",
                f'load=["{key}"] on the repository read, or selectinload({model.__name__}.{key}) '
                f"/ joinedload(...) on the query",
            )

    # -- rule 2: one shape, many times, in a transaction ------------------------------------
    def on_statement(
        self,
        conn: Connection,
        statement: str,
        parameters: Any,
        shape: StatementShape,
        context: ExecutionContext | None,
    ) -> None:
        """A statement ran on ``conn``: count its shape, report an N+1 at the threshold."""
        # ORM reads only: SQLAlchemy's own reflection (create_all, inspect) repeats its queries
        # per table, and a Core statement in a loop is a deliberate choice. Keyed on the exact
        # text sent, whose values are bound; one without parameters (a health check) is no lookup
        if shape.operation != "SELECT" or not parameters or not _is_orm(context):
            return
        mode = self.current_mode()
        if mode == "off":
            return
        options = context.execution_options if context is not None else {}
        if options.get(REPORTED) or options.get(BATCHED):
            return
        # counted per transaction: the counts sit beside the transaction they belong to, so a
        # new one starts afresh without a "begin" engine event, whose listener would make every
        # connection of the engine dispatch every event (see dalkit.engine.statement_hooks)
        transaction = conn.get_transaction()
        held = conn.info.get(_SHAPES_KEY)
        if held is None or held[0] is not transaction:
            held = conn.info[_SHAPES_KEY] = (transaction, {})
        counts: dict[str, int] = held[1]
        count = counts[statement] = counts.get(statement, 0) + 1
        if count == self.threshold:
            entity = _entity_name(context)
            self._report(
                mode,
                f"the same statement{f' on {entity}' if entity else ''} ran {count} times in one "
                f"transaction with only its parameters changing: {shape.text[:200]}",
                "read the rows in one query (repository.get_many(ids), a filter such as "
                'id__in=[...], or load=["relationship"] for related rows)',
            )

    def _report(self, mode: NPlusOneMode, what: str, fix: str) -> None:
        location = caller_location()
        with self._lock:
            self.detections += 1
        message = f"N+1 query: {what} (at {format_location(location)}); fix: {fix}"
        if mode == "raise":
            raise NPlusOneError(message)
        if location is None:
            warnings.warn(NPlusOneWarning(message), stacklevel=2)
        else:
            warnings.warn_explicit(NPlusOneWarning(message), NPlusOneWarning, *location)


def _is_orm(context: ExecutionContext | None) -> bool:
    compile_state = getattr(getattr(context, "compiled", None), "compile_state", None)
    return type(compile_state).__module__.startswith("sqlalchemy.orm")


def _entity_name(context: ExecutionContext | None) -> str | None:
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    descriptions = getattr(statement, "column_descriptions", None)
    try:
        entity = descriptions[0].get("entity") if descriptions else None
    except (TypeError, AttributeError, IndexError):
        return None
    return getattr(entity, "__name__", None)
