"""Per-shape statistics in bounded memory (an LRU of shapes, which dalkit.observe.shapes
makes), and the slow-query log with masked parameters and string literals. No listeners here:
the observer feeds them."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from dalkit.engine.sql_literals import shown_sql
from dalkit.observe.param_columns import (
    INSERT_TARGET,
    ParameterColumns,
    parameter_columns,
)
from dalkit.observe.shapes import StatementShape, shape_of
from dalkit.secret_names import SECRET_NAMES

__all__ = [
    "QueryStats",
    "SlowQueryLog",
    "StatementShape",
    "mask_parameters",
    "named_columns",
    "positional_names",
    "shape_of",
]

log = logging.getLogger("dalkit.slow_query")

#: longer strings are cut in the log
MAX_VALUE_CHARS = 80
#: parameters shown of one set, and items of a list or tuple value: the rest are counted (a
#: slow IN of 30,000 values made a log line of 200 KB, the statement itself cut at 2,000)
MAX_PARAMETERS = 100
MAX_ITEMS = 20
#: characters of a statement shown
MAX_STATEMENT_CHARS = 2000
#: longer statements naming a secret anywhere are not read for the column of each value (at
#: 5-50 us a parameter, a slow IN of 50,000 took 1.2 s to log): all their values are masked
MAX_READ_CHARS = 10_000
_FOLDED_SECRET = re.compile(SECRET_NAMES.pattern)  # SECRET_NAMES of lower-case ASCII
_FOLDED_INSERT = re.compile("insert|replace")  # where INSERT_TARGET may match, in the same
#: durations kept per shape for its p95
WINDOW = 256


class _Tally:
    __slots__ = ("count", "durations", "errors", "max_s", "operation", "rows", "total_s")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.count = self.rows = 0
        self.total_s = self.max_s = 0.0
        self.durations: deque[float] = deque(maxlen=WINDOW)
        # error class -> runs that raised it; created with the first failure
        self.errors: dict[str, int] | None = None


class QueryStats:
    """Count, time and rows per statement shape: pg_stat_statements from the client's side.

    Args:
        max_shapes: At most this many shapes are kept; the least recently run is dropped
            first.
    """

    def __init__(self, max_shapes: int = 500) -> None:
        self._lock = threading.Lock()
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()
        self.resize(max_shapes)

    def resize(self, max_shapes: int) -> None:
        """Keep at most ``max_shapes`` shapes from now on; the least recently run go first.

        Args:
            max_shapes: How many shapes to keep (ValueError unless positive).
        """
        if max_shapes < 1:
            raise ValueError("max_shapes must be positive")
        with self._lock:
            self.max_shapes = max_shapes
            while len(self._tallies) > max_shapes:
                self._tallies.popitem(last=False)

    def record(self, shape: StatementShape, duration_s: float, rows: int) -> None:
        """Count one run of ``shape`` that took ``duration_s`` and returned or changed ``rows``
        (-1: unknown)."""
        with self._lock:
            tally = self._tally(shape)
            tally.count += 1
            tally.total_s += duration_s
            if duration_s > tally.max_s:
                tally.max_s = duration_s
            if rows > 0:
                tally.rows += rows
            tally.durations.append(duration_s)

    def record_failure(self, shape: StatementShape, error: str) -> None:
        """Count one run of ``shape`` that raised: ``errors``, apart from the runs that
        succeeded (``count`` and the times).

        Args:
            shape: The statement's shape.
            error: The error's class (`dalkit.driver_errors.error_class`), never its message.
        """
        with self._lock:
            tally = self._tally(shape)
            if tally.errors is None:
                tally.errors = {}
            tally.errors[error] = tally.errors.get(error, 0) + 1

    def _tally(self, shape: StatementShape) -> _Tally:
        """The tally of ``shape``, now the most recent; the caller holds the lock."""
        tally = self._tallies.get(shape.text)
        if tally is None:
            if len(self._tallies) >= self.max_shapes:
                self._tallies.popitem(last=False)
            tally = self._tallies[shape.text] = _Tally(shape.operation)
        else:
            self._tallies.move_to_end(shape.text)
        return tally

    def snapshot(self, top: int | None = 20, *, reset: bool = False) -> list[dict[str, Any]]:
        """The ``top`` shapes by total time, slowest first.

        Args:
            top: How many shapes; None for all.
            reset: Start over afterwards.

        Returns:
            Per shape: ``statement``, ``operation``, ``count``, ``total_ms``, ``mean_ms``,
            ``p95_ms``, ``max_ms`` and ``rows`` of the runs that succeeded, ``errors`` (the runs
            that raised) and ``error_classes`` (those runs per error class).
        """
        with self._lock:
            items = [
                (text, t, sorted(t.durations), dict(t.errors or {}))
                for text, t in self._tallies.items()
            ]
            if reset:
                self._tallies = OrderedDict()
        items.sort(key=lambda item: item[1].total_s, reverse=True)
        return [
            {
                "statement": text,
                "operation": tally.operation,
                "count": tally.count,
                "total_ms": round(tally.total_s * 1000.0, 3),
                "mean_ms": round(tally.total_s * 1000.0 / tally.count, 3) if tally.count else 0.0,
                "p95_ms": round(_p95(ordered) * 1000.0, 3),
                "max_ms": round(tally.max_s * 1000.0, 3),
                "rows": tally.rows,
                "errors": sum(errors.values()),
                "error_classes": errors,
            }
            for text, tally, ordered, errors in items[:top]
        ]


def _p95(ordered: Sequence[float]) -> float:
    if not ordered:
        return 0.0
    return ordered[max(1, math.ceil(0.95 * len(ordered))) - 1]


def mask_parameters(
    parameters: Any, names: Sequence[str] | None = None, columns: Mapping[str, str] | None = None
) -> Any:
    """``parameters`` fit for a log: values of secret-looking names as ``***``, long values,
    long lists and long parameter sets cut (the first ``MAX_PARAMETERS`` parameters shown).

    Args:
        parameters: A mapping, a sequence, or a list of them (executemany).
        names: The names of positional parameters (the compiled statement's order).
        columns: For named parameters, the column each stands for (`named_columns`): a value
            is masked when its name or its column looks secret.

    Returns:
        The parameters, masked; only the first set of an executemany, and how many there were.

    Examples:
        ```python
        from dalkit.observe.querylog import mask_parameters

        print(mask_parameters({"email": "a@example.com", "password": "hunter2"}))
        #> {'email': 'a@example.com', 'password': '***'}
        print(mask_parameters({"pw_1": "hunter2"}, columns={"pw_1": "password"}))
        #> {'pw_1': '***'}
        ```
    """
    if isinstance(parameters, Mapping):
        columns = columns or {}
        shown = {
            str(k): _shown(f"{k} {columns.get(str(k), '')}", v)
            for k, v in islice(parameters.items(), MAX_PARAMETERS)
        }
        if len(parameters) > MAX_PARAMETERS:
            shown["..."] = f"{len(parameters) - MAX_PARAMETERS} more"
        return shown
    if isinstance(parameters, list) and parameters and not isinstance(parameters[0], (str, bytes)):
        # executemany: the first set tells enough
        return [mask_parameters(parameters[0], names, columns), f"... {len(parameters)} sets"]
    if isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
        return _cut(
            [
                _shown(names[i] if names and i < len(names) else "", value)
                for i, value in enumerate(islice(parameters, MAX_PARAMETERS))
            ],
            len(parameters),
            "more",
        )
    return parameters


def _cut(shown: list[Any], total: int, what: str) -> list[Any]:
    """``shown``, the first of ``total`` values, and how many were left out if any."""
    return [*shown, f"... {total - len(shown)} {what}"] if total > len(shown) else shown


#: the column of a value the text gives none, in a statement writing a secret-looking column:
#: it reads as a secret name (SECRET_NAMES), so the value is masked: failing closed
UNMAPPED = "column unknown in a secret write"


def _labels(
    statement: str, parameters: Any, compiled: Sequence[str] | None
) -> tuple[list[str] | None, dict[str, str] | None]:
    """What masks each value of ``parameters``, for `mask_parameters`: per positional one,
    its compiled name (SQLAlchemy's, when it compiled the statement) and the column the text
    gives it; per named one, that column. A secret-looking either masks it; so does `UNMAPPED`
    where the text cannot say which column a value goes to in a statement writing a secret."""
    first = parameters
    if isinstance(parameters, list) and parameters and not isinstance(parameters[0], (str, bytes)):
        first = parameters[0]  # executemany, as mask_parameters tells it: its first set shows
    if isinstance(first, Mapping):
        found = _columns(statement)
        closed = found.writes_secret
        return None, {
            str(key): found.named.get(str(key), "") or (UNMAPPED if closed else "")
            for key in islice(first, MAX_PARAMETERS)  # the ones shown
        }
    if not isinstance(first, Sequence) or isinstance(first, (str, bytes)) or not first:
        return None, None
    count = len(first)
    compiled = list(compiled or ())
    # an expanding IN is compiled as one name and sent as several parameters, an
    # insertmanyvalues batch as one row's names and sent as several rows: then the compiled
    # names fit no value, and only say that a secret is among them
    aligned = len(compiled) == count
    unfit_secret = not aligned and any(SECRET_NAMES.search(name) for name in compiled)
    found = _columns(statement, unfit_secret)
    mapped = found.positional if len(found.positional) == count else []
    closed = found.writes_secret or unfit_secret
    return [
        " ".join(
            filter(
                None,
                (
                    compiled[i] if aligned else "",
                    found.positional[i] if i < len(found.positional) else "",
                    UNMAPPED if closed and not (i < len(mapped) and mapped[i]) else "",
                ),
            )
        )
        for i in range(min(count, MAX_PARAMETERS))
    ], None


def _columns(statement: str, compiled_secret: bool = False) -> ParameterColumns:
    """`parameter_columns`, read only where it can mask a value: when the text names a secret,
    inserts naming no columns, or ``compiled_secret`` (compiled names that fit no value hold a
    secret's); no column the text gives a value is a secret's else. A text too long to read
    takes every value for a secret's (fails closed)."""
    inserts: Iterable[re.Match[str] | None]
    if statement.isascii():
        # the patterns' re.IGNORECASE scans ASCII text 10-15x slower than this (timeit)
        folded = statement.lower()
        secret = _FOLDED_SECRET.search(folded.replace('"', "")) is not None
        starts = _FOLDED_INSERT.finditer(folded)
        inserts = (INSERT_TARGET.match(statement, m.start()) for m in starts)
    else:  # "to""ken" is token
        secret = SECRET_NAMES.search(statement.replace('"', "")) is not None
        inserts = INSERT_TARGET.finditer(statement)
    if not (secret or compiled_secret) and not any(
        m is not None and m.group(1) is None and m.group(2) is None for m in inserts
    ):
        return ParameterColumns([], {}, False)
    if len(statement) > MAX_READ_CHARS:
        return ParameterColumns([], {}, True)
    return parameter_columns(statement)


def positional_names(statement: str) -> list[str]:
    """The column each positional parameter (``?``, ``%s``, ``$n``) of ``statement`` stands
    for, as far as the text says: ``""`` where it does not. So that a value bound for a column
    named like a secret is masked in SQL that SQLAlchemy did not compile.

    Args:
        statement: SQL with positional placeholders.

    Returns:
        One name per parameter, in the parameters' order.

    Examples:
        ```python
        from dalkit.observe.querylog import positional_names

        print(positional_names("UPDATE users SET password = ? WHERE id = ?"))
        #> ['password', 'id']
        ```
    """
    return parameter_columns(statement).positional


def named_columns(statement: str) -> dict[str, str]:
    """The column each named parameter (psycopg's ``%(name)s``, sqlite3's ``:name``) is
    inserted into, assigned to or compared with: so that ``password IN %(pw)s`` masks ``pw``.

    Args:
        statement: SQL as sent to the driver.

    Returns:
        Parameter name to column, for the parameters the text names a column for.
    """
    return parameter_columns(statement).named


def _shown(name: str, value: Any) -> Any:
    if value is not None and SECRET_NAMES.search(name):
        return "***"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + f"... ({len(value)} chars)"
    if isinstance(value, (list, tuple)):  # an array parameter: ANY(:ids)
        return _cut([_shown(name, item) for item in value[:MAX_ITEMS]], len(value), "more items")
    return value


class SlowQueryLog:
    """Logs statements slower than ``threshold_ms`` to ``dalkit.slow_query`` (WARNING).

    Args:
        threshold_ms: Statements taking at least this long are logged.

    Raises:
        ValueError: ``threshold_ms`` is negative.
    """

    def __init__(self, threshold_ms: float) -> None:
        if threshold_ms < 0:
            raise ValueError("slow_query_ms must be zero or positive")
        self.threshold_s = threshold_ms / 1000.0
        self.count = 0

    def emit(
        self,
        statement: str,
        parameters: Any,
        duration_s: float,
        *,
        positional_names: Sequence[str] | None,
        location: str,
        isolation: str | None,
        rows: int,
        error: str | None = None,
    ) -> None:
        """Log one slow statement; the caller has checked the threshold. ``error``: the class
        of the error it raised (never its message, which may quote values), when it failed."""
        from dalkit.audit import current_actor  # audit is above nothing here; imported late

        self.count += 1
        actor, request_id = current_actor()
        log.warning(
            "slow query: %.1f ms at %s (%sisolation %s, rows %s%s%s)\n%s\nparameters: %r",
            duration_s * 1000.0,
            location,
            f"failed: {error}, " if error else "",
            isolation or "default",
            rows if rows >= 0 else "?",
            f", request {request_id}" if request_id else "",
            f", actor {actor}" if actor else "",
            shown_sql(statement, MAX_STATEMENT_CHARS),
            mask_parameters(parameters, *_labels(statement, parameters, positional_names)),
            extra={
                "duration_ms": round(duration_s * 1000.0, 3),
                "source": location,
                "request_id": request_id,
                "actor": actor,
                "error": error,
            },
        )
