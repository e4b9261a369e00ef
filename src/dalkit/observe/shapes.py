"""Statement shapes: a statement with its literals and parameter lists replaced and its comments
dropped, and its
operation (what the query statistics, the metrics and the N+1 detector group statements by),
cached by the exact text in bounded memory."""

from __future__ import annotations

import hashlib
import re
import threading

from dalkit.engine.sql_literals import mask_strings

__all__ = ["MAX_SHAPE_CHARS", "StatementShape", "shape_of"]

#: characters of a shape's text kept; a longer shape (a CASE of 10,000 arms, VALUES rows that
#: differ) keeps its start and a digest of all of it, so that the 500 shapes of the query
#: statistics cannot hold hundreds of megabytes, while distinct shapes stay distinct
MAX_SHAPE_CHARS = 2000

# string literals go first, by mask_strings. The lookahead first: a position that starts none
# of these is passed over at once (a 1.6 MB INSERT of 144,000 literals: 89 to 44 ms, timeit)
_LITERALS = re.compile(
    r"""(?=[%$:\d-])(?:
        %\(\w+\)s | %s          # pyformat / format placeholders
      | \$\d+                   # numeric placeholders (asyncpg)
      | (?<![\w:]):\w+          # named placeholders
      | (?<![\w."$])-?\d+(?:\.\d+)?(?![\w"])   # number literal
    )""",
    re.VERBOSE,
)
_PLACEHOLDER_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_REPEATED_LISTS = re.compile(r"\(\.\.\.\)(?:\s*,\s*\(\.\.\.\))+")
_CACHE_ENTRIES = 4096
#: the statements the cache is keyed by hold at most this many characters in all: under a
#: count alone, 2000 distinct raw statements of 90 KB (literals inline) kept 200 MB alive
_CACHE_CHARS = 8 * 2**20


class StatementShape:
    """A statement with its literals and parameter lists replaced, its comments dropped, and its
    operation.

    Attributes:
        text: The statement with ``?`` for each literal and ``(...)`` for each list; past
            ``MAX_SHAPE_CHARS``, its start, its length and a digest of all of it.
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
_cached_chars = 0  # the length of every statement in _shapes, added up


def shape_of(statement: str) -> StatementShape:
    """The shape of ``statement``.

    SQL built by SQLAlchemy is mostly one string per shape already, so results are cached by
    the exact text (a cache bounded in entries and in the characters of its statements: the
    oldest go first, and a statement longer than the whole bound is not kept).

    Args:
        statement: SQL as sent to the driver.

    Returns:
        Its shape.

    Examples:
        ```python
        from dalkit.observe.shapes import shape_of

        print(shape_of("SELECT * FROM t WHERE id IN (?, ?, ?) AND name = 'x'").text)
        #> SELECT * FROM t WHERE id IN (...) AND name = ?
        ```
    """
    shape = _shapes.get(statement)
    if shape is None:
        # no Python call per literal on the way: a 2.2 MB INSERT of 160,000 inline literals took
        # 0.25-0.33 s to shape, 0.13-0.16 s now (timeit, a loaded machine)
        # a comment goes: it may hold a secret, and a tracing comment's request id would make
        # each run a shape of its own (and an OTHER, its first word no operation's)
        text = _LITERALS.sub("?", mask_strings(statement, "?", comments=" "))
        text = _PLACEHOLDER_LIST.sub("(...)", text)
        # str.split() parts at what \s matches, in C (the 1.8 MB INSERT: 36 to 12 ms, timeit)
        text = _REPEATED_LISTS.sub("(...)", " ".join(text.split()))
        if len(text) > MAX_SHAPE_CHARS:
            digest = hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=8).hexdigest()
            text = f"{text[:MAX_SHAPE_CHARS]}... ({len(text)} characters, digest {digest})"
        first = text.split(None, 1)[0].upper() if text else ""
        known = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "COPY")
        operation = first if first in known else "OTHER"
        shape = StatementShape(text, "SELECT" if operation == "WITH" else operation)
        _remember(statement, shape)
    return shape


def _remember(statement: str, shape: StatementShape) -> None:
    global _cached_chars
    size = len(statement)
    with _shapes_lock:
        if size > _CACHE_CHARS or statement in _shapes:  # too long, or another thread's miss
            return
        while _shapes and (len(_shapes) >= _CACHE_ENTRIES or _cached_chars + size > _CACHE_CHARS):
            oldest = next(iter(_shapes))
            del _shapes[oldest]
            _cached_chars -= len(oldest)
        _shapes[statement] = shape
        _cached_chars += size
