"""Statement shapes, per-shape statistics in bounded memory (an LRU of shapes), and the
slow-query log with masked parameters and string literals. No listeners here: the observer
feeds them."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from dalkit.engine.sql_literals import mask_strings

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

#: bound-parameter names whose values are never shown
SECRET_NAMES = re.compile(r"pass(word|wd|phrase)?|secret|token|api_?key|auth|credential|salt", re.I)
#: longer strings are cut in the log
MAX_VALUE_CHARS = 80
#: durations kept per shape for its p95
WINDOW = 256

# string literals go first, by mask_strings
_LITERALS = re.compile(
    r"""%\(\w+\)s | %s          # pyformat / format placeholders
      | \$\d+                   # numeric placeholders (asyncpg)
      | (?<![\w:]):\w+          # named placeholders
      | (?<![\w."$])-?\d+(?:\.\d+)?(?![\w"])   # number literal
    """,
    re.VERBOSE,
)
_PLACEHOLDER_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_REPEATED_LISTS = re.compile(r"\(\.\.\.\)(?:\s*,\s*\(\.\.\.\))+")
_SPACES = re.compile(r"\s+")
_SHAPE_CACHE_SIZE = 4096
# the column the SQL text gives a parameter, which masks its value when it looks secret even if
# the parameter's name does not (exec_driver_sql's positional ones, the repositories'
# executemany on SQLite, a bind named "pw"): an INSERT's column list, an IN list's column, or
# the column it is compared with or assigned to. Patterns, not a parser: a "?" inside a string
# literal counts as a parameter, which can only shift a name, never unmask a compiled one
_INSERT_COLUMNS = re.compile(
    r"^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+[\w.\"]+\s*\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)",
    re.IGNORECASE,
)
_POSITIONAL = re.compile(r"\?|%s|\$(\d+)")
_PYFORMAT = re.compile(r"%\((\w+)\)s")  # psycopg's named placeholders
_ONE = r"(?:\?|%s|\$\d+|%\(\w+\)s)"
_IN_LIST = re.compile(
    rf'([\w"]+)\s+(?:NOT\s+)?IN\s*\(((?:\s*{_ONE}\s*,)*\s*{_ONE}\s*)\)', re.IGNORECASE
)
_COMPARED = re.compile(
    rf'([\w"]+)\s*(?:=|<>|!=|<=|>=|<|>|\s(?:NOT\s+)?I?LIKE\s)\s*{_ONE}\Z', re.IGNORECASE
)


class StatementShape:
    """A statement with its literals and parameter lists replaced, and its operation.

    Attributes:
        text: The statement with ``?`` for each literal and ``(...)`` for each list.
        operation: ``SELECT`` (``WITH`` counts as one), ``INSERT``, ``UPDATE``, ``DELETE`` or
            ``OTHER``.
    """

    __slots__ = ("operation", "text")

    def __init__(self, text: str, operation: str) -> None:
        self.text = text
        self.operation = operation

    def __repr__(self) -> str:
        return f"StatementShape({self.text!r})"


_shapes: dict[str, StatementShape] = {}
_shapes_lock = threading.Lock()


def shape_of(statement: str) -> StatementShape:
    """The shape of ``statement``.

    SQL built by SQLAlchemy is mostly one string per shape already, so results are cached by
    the exact text (a bounded cache).

    Args:
        statement: SQL as sent to the driver.

    Returns:
        Its shape.

    Examples:
        ```python
        from dalkit.observe.querylog import shape_of

        print(shape_of("SELECT * FROM t WHERE id IN (?, ?, ?) AND name = 'x'").text)
        #> SELECT * FROM t WHERE id IN (...) AND name = ?
        ```
    """
    shape = _shapes.get(statement)
    if shape is None:
        text = _LITERALS.sub("?", mask_strings(statement, "?"))
        text = _PLACEHOLDER_LIST.sub("(...)", text)
        text = _REPEATED_LISTS.sub("(...)", _SPACES.sub(" ", text)).strip()
        first = text.split(None, 1)[0].upper() if text else ""
        known = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "COPY")
        operation = first if first in known else "OTHER"
        shape = StatementShape(text, "SELECT" if operation == "WITH" else operation)
        with _shapes_lock:
            if len(_shapes) >= _SHAPE_CACHE_SIZE:
                _shapes.pop(next(iter(_shapes)))
            _shapes[statement] = shape
    return shape


class _Tally:
    __slots__ = ("count", "durations", "max_s", "operation", "rows", "total_s")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.count = self.rows = 0
        self.total_s = self.max_s = 0.0
        self.durations: deque[float] = deque(maxlen=WINDOW)


class QueryStats:
    """Count, time and rows per statement shape: pg_stat_statements from the client's side.

    Args:
        max_shapes: At most this many shapes are kept; the least recently run is dropped
            first.
    """

    def __init__(self, max_shapes: int = 500) -> None:
        if max_shapes < 1:
            raise ValueError("max_shapes must be positive")
        self.max_shapes = max_shapes
        self._lock = threading.Lock()
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()

    def record(self, shape: StatementShape, duration_s: float, rows: int) -> None:
        """Count one run of ``shape`` that took ``duration_s`` and returned or changed ``rows``
        (-1: unknown)."""
        with self._lock:
            tally = self._tallies.get(shape.text)
            if tally is None:
                if len(self._tallies) >= self.max_shapes:
                    self._tallies.popitem(last=False)
                tally = self._tallies[shape.text] = _Tally(shape.operation)
            else:
                self._tallies.move_to_end(shape.text)
            tally.count += 1
            tally.total_s += duration_s
            if duration_s > tally.max_s:
                tally.max_s = duration_s
            if rows > 0:
                tally.rows += rows
            tally.durations.append(duration_s)

    def snapshot(self, top: int | None = 20, *, reset: bool = False) -> list[dict[str, Any]]:
        """The ``top`` shapes by total time, slowest first.

        Args:
            top: How many shapes; None for all.
            reset: Start over afterwards.

        Returns:
            Per shape: ``statement``, ``operation``, ``count``, ``total_ms``, ``mean_ms``,
            ``p95_ms``, ``max_ms`` and ``rows``.
        """
        with self._lock:
            items = [(text, t, sorted(t.durations)) for text, t in self._tallies.items()]
            if reset:
                self._tallies = OrderedDict()
        items.sort(key=lambda item: item[1].total_s, reverse=True)
        return [
            {
                "statement": text,
                "operation": tally.operation,
                "count": tally.count,
                "total_ms": round(tally.total_s * 1000.0, 3),
                "mean_ms": round(tally.total_s * 1000.0 / tally.count, 3),
                "p95_ms": round(_p95(ordered) * 1000.0, 3),
                "max_ms": round(tally.max_s * 1000.0, 3),
                "rows": tally.rows,
            }
            for text, tally, ordered in items[:top]
        ]


def _p95(ordered: Sequence[float]) -> float:
    if not ordered:
        return 0.0
    return ordered[max(1, math.ceil(0.95 * len(ordered))) - 1]


def mask_parameters(
    parameters: Any, names: Sequence[str] | None = None, columns: Mapping[str, str] | None = None
) -> Any:
    """``parameters`` fit for a log: values of secret-looking names as ``***``, long values cut.

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
        return {str(k): _shown(f"{k} {columns.get(str(k), '')}", v) for k, v in parameters.items()}
    if isinstance(parameters, list) and parameters and not isinstance(parameters[0], (str, bytes)):
        # executemany: the first set tells enough
        return [mask_parameters(parameters[0], names, columns), f"... {len(parameters)} sets"]
    if isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
        return [
            _shown(names[i] if names and i < len(names) else "", value)
            for i, value in enumerate(parameters)
        ]
    return parameters


def _parameter_names(statement: str, compiled: Sequence[str] | None) -> list[str]:
    """Per positional parameter, its compiled name (when SQLAlchemy compiled the statement)
    and the column the text says it stands for: a secret-looking either masks it."""
    columns = positional_names(statement)
    compiled = compiled or []
    # an expanding IN is compiled as one name and sent as several parameters
    return [
        f"{compiled[i] if i < len(compiled) else ''} {columns[i] if i < len(columns) else ''}"
        for i in range(max(len(compiled), len(columns)))
    ]


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
    insert = _INSERT_COLUMNS.match(statement)
    if insert is not None:
        columns = [name.strip().strip('"') for name in insert.group(1).split(",")]
        values = [value.strip() for value in insert.group(2).split(",")]
        if len(columns) == len(values) and all(_POSITIONAL.fullmatch(v) for v in values):
            if all(v.startswith("$") for v in values):  # $n: the n-th parameter
                named = {int(v[1:]): column for column, v in zip(columns, values, strict=True)}
                return [named.get(n, "") for n in range(1, max(named) + 1)]
            return columns
    lists = _in_lists(statement)
    found: dict[int, str] = {}
    for order, placeholder in enumerate(_POSITIONAL.finditer(statement)):
        number = int(placeholder.group(1)) - 1 if placeholder.group(1) else order
        found.setdefault(number, _column_at(statement, lists, placeholder))
    return [found.get(n, "") for n in range(max(found) + 1)] if found else []


def named_columns(statement: str) -> dict[str, str]:
    """The column each of psycopg's named parameters (``%(name)s``) is compared with or
    assigned to: so that ``password IN %(pw)s`` masks ``pw`` as a secret.

    Args:
        statement: SQL as sent to psycopg.

    Returns:
        Parameter name to column, for the parameters the text names a column for.
    """
    lists = _in_lists(statement)
    found: dict[str, str] = {}
    for placeholder in _PYFORMAT.finditer(statement):
        if column := _column_at(statement, lists, placeholder):
            found.setdefault(placeholder.group(1), column)
    return found


#: ``(start, end, column)`` of each ``column IN (placeholders)`` list of a statement
_Lists = list[tuple[int, int, str]]


def _in_lists(statement: str) -> _Lists:
    return [(m.start(2), m.end(2), m.group(1).strip('"')) for m in _IN_LIST.finditer(statement)]


def _column_at(statement: str, lists: _Lists, placeholder: re.Match[str]) -> str:
    at = placeholder.start()
    name = next((column for start, end, column in lists if start <= at < end), None)
    if name is not None:
        return name
    # a comparison ends at its placeholder: looked for just before it, not from the start
    compared = _COMPARED.search(statement, max(0, at - 200), placeholder.end())
    return compared.group(1).strip('"') if compared else ""


def _shown(name: str, value: Any) -> Any:
    if value is not None and SECRET_NAMES.search(name):
        return "***"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + f"... ({len(value)} chars)"
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
    ) -> None:
        """Log one slow statement; the caller has checked the threshold."""
        from dalkit.audit import current_actor  # audit is above nothing here; imported late

        self.count += 1
        actor, request_id = current_actor()
        log.warning(
            "slow query: %.1f ms at %s (isolation %s, rows %s%s%s)\n%s\nparameters: %r",
            duration_s * 1000.0,
            location,
            isolation or "default",
            rows if rows >= 0 else "?",
            f", request {request_id}" if request_id else "",
            f", actor {actor}" if actor else "",
            _SPACES.sub(" ", mask_strings(statement)).strip()[:2000],
            mask_parameters(
                parameters,
                _parameter_names(statement, positional_names),
                named_columns(statement) if "%(" in statement else None,
            ),
            extra={
                "duration_ms": round(duration_s * 1000.0, 3),
                "source": location,
                "request_id": request_id,
                "actor": actor,
            },
        )
