"""The driver tuples of a psycopg or asyncpg COPY, built while the driver reads them: no pass
over the rows before the COPY starts, so the server inserts while Python converts, and no list
of 100k tuples kept alive. Shapes, types, zones and (psycopg) integer ranges are still checked:
a bad row aborts the COPY (`dalkit.repository.copy_driver.streams_rows`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from dalkit.repository.copy import BulkPlan, check_row_shape
from dalkit.repository.numerics import Zones, crosses_zones
from dalkit.repository.ranges import check_integer_ranges
from dalkit.repository.values import ColumnValues, of_own_types

__all__ = ["StreamedTuples", "ValuesToCoerce"]

#: rows per segment of a COPY checked together (`StreamedTuples.checked`)
_SEGMENT = 10_000


class ValuesToCoerce(Exception):  # control flow inside a load, never seen outside
    """Raised inside a COPY of rows not yet type-checked when a value is not of its column's
    own type: the load is then redone with the rows coerced (`dalkit.repository.values`)."""


class StreamedTuples(Sequence[tuple[Any, ...]]):
    """The driver tuples of ``rows`` (the caller's mappings), made one at a time on iteration.

    Slices are streamed too (chunks, and the bisection that names a bad row), each knowing its
    ``offset`` in the caller's rows. Iterating raises BulkLoadError for a row with more or
    fewer fields than row 0, and KeyError or TypeError for one with as many but others (or not
    a mapping): `check_shapes()` then names it; `check_ranges()` must run before the COPY
    ends, as psycopg's binary COPY wraps an integer too wide for its column.
    """

    __slots__ = ("_plan", "_rows", "checking", "offset", "ranges", "typed", "zones")

    def __init__(
        self,
        plan: BulkPlan,
        rows: Sequence[Any],
        offset: int = 0,
        *,
        typed: bool = True,
        zones: Zones = (),
        ranges: bool = True,
    ) -> None:
        self._plan = plan
        self._rows = rows
        self.offset = offset
        self.typed = typed  # False: `check_types()` must find every value of its own type
        # columns whose zone conversion the plan left out: `check_types()` must find none of
        # their values across zones (numerics.unzoned)
        self.zones = zones
        self.ranges = ranges  # False: the driver refuses an integer its column cannot hold
        self.checking = False  # True: iterating runs `check()` segment by segment (`checked`)

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> StreamedTuples: ...
    def __getitem__(self, index: int | slice) -> tuple[Any, ...] | StreamedTuples:
        if isinstance(index, slice):
            start, _, step = index.indices(len(self._rows))
            if step != 1:
                raise ValueError("streamed tuples are sliced in steps of 1")
            rows = self._rows[index]
            return StreamedTuples(
                self._plan,
                rows,
                self.offset + start,
                typed=self.typed,
                zones=self.zones,
                ranges=self.ranges,
            )
        position = index if index >= 0 else len(self._rows) + index
        (row,) = StreamedTuples(self._plan, self._rows[position : position + 1])
        return row

    def checked(self) -> StreamedTuples:
        """These tuples for a COPY: iterating them runs `check()` on each segment of rows
        right after the driver took its last tuple, the last one before the COPY ends.

        Returns:
            The same rows, checked as they are iterated.
        """
        checked = self[:]
        checked.checking = True
        return checked

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        if self.checking:
            return self._checked_segments()
        plan = self._plan
        names = [f.name for f in plan.fields[: plan.key_count]]
        # the itemgetter reads row 0's fields and would ignore any other: a row naming more
        # (one row 0 leaves to its default) would lose them silently. One C-speed pass over
        # the lengths refuses it, as the eager plan's tuples() does: 1.7-2.8 ms per 100k rows
        # (set(map(len)) took 2.1-3.7 ms), against ~250 ms for their COPY
        try:
            shaped = list(map(len, self._rows)).count(len(names)) == len(self._rows)
        except TypeError:  # a row without a length is no mapping
            shaped = False
        if not shaped:
            self.check_shapes()
        pick = operator.itemgetter(*names)
        # map(itemgetter) is the whole per-row work of a load without defaults or processors.
        # Built during the COPY rather than before it, 100k rows load at 1.09x-1.16x psycopg's
        # own COPY loop instead of 0.91x-0.94x (bench/peers rows, three interleaved runs)
        rows: Iterator[Any] = (
            map(pick, self._rows) if len(names) > 1 else zip(map(pick, self._rows))
        )
        if plan.defaults:
            defaults = plan.defaults
            rows = ((*values, *(make() for make in defaults)) for values in rows)
        for at, process in enumerate(plan.processors):
            if process is not None:
                rows = _processed(rows, at, process)
        return rows

    def _checked_segments(self) -> Iterator[tuple[Any, ...]]:
        # each segment is checked while the server works through the rows sent before it, on
        # rows still in the CPU's cache; checked all at once after the last row, the check
        # (78 ms of CPU) outlasted the server's backlog. bench/peers' 100k-row sync load, CPU
        # per load 131 -> 106 ms (psycopg's own COPY loop: 85), wall dalkit/psycopg per round
        # 0.85x -> 0.995x; segments of 5k rows: 107 ms, 1.01x; of 25k: 118 ms, 0.91x (medians
        # of 10 interleaved rounds, load average 4.2, /work/prof23/syncbulk/abseg.py)
        for start in range(0, len(self._rows), _SEGMENT):
            segment = self[start : start + _SEGMENT]
            yield from segment
            segment.check()

    def check_shapes(self) -> None:
        """Raise BulkLoadError naming the first row that does not have the fields of row 0."""
        names = [f.name for f in self._plan.fields[: self._plan.key_count]]
        for index, row in enumerate(self._rows):
            check_row_shape(self.offset + index, row, names)

    def check(self) -> None:
        """Raise ValuesToCoerce, or BulkLoadError naming the first integer its column cannot
        hold. Run on each segment of a COPY while the server works through the rows before it
        (`checked`): before the COPY, the type check cost the load 0.95x -> 0.77x of psycopg's
        own (/work/prof20/bulk/backlog.py).

        The checks share one list of each field's values (`ColumnValues`), where each read
        the rows itself (10 passes over bench/peers' six columns, now 6): the checks of its
        100k rows 110.6 -> 102.5 ms of CPU (medians of 21 alternating runs,
        /work/prof26/bulk6/micro.py; listing the six columns is 38 of those ms). Without the
        range check (asyncpg), where only the datetimes are read twice, listing the integer
        columns cost more than it saved: 48.1 -> 50.3 ms (/work/prof26/bulk6/micro_asyncpg.py),
        so each check reads the rows itself there."""
        if not self.ranges:
            self.check_types()
            return
        columns = ColumnValues(self._rows)
        self.check_types(columns)
        self.check_ranges(columns)

    def check_types(self, columns: ColumnValues | None = None) -> None:
        """Raise ValuesToCoerce unless the rows were coerced or every value is of its column's
        own type, or when a datetime crosses zones in a column whose conversion was left out;
        the rows' values read from ``columns`` when given."""
        if not self.typed and not of_own_types(self._plan.info, self._rows, columns):
            raise ValuesToCoerce
        if self.zones and crosses_zones(self.zones, self._rows, columns):
            raise ValuesToCoerce

    def check_ranges(self, columns: ColumnValues | None = None) -> None:
        """Raise BulkLoadError naming the first integer its column cannot hold; the caller's
        values read from ``columns`` when given."""
        check_integer_ranges(
            self._plan.fields,
            self._rows,
            self,
            offset=self.offset,
            column=lambda at: self._column(at, columns),
        )

    def _column(self, at: int, columns: ColumnValues | None) -> Iterable[Any]:
        plan = self._plan
        if at < plan.key_count and plan.processors[at] is None:
            # the caller's own values, read from the mappings without building any tuple
            name = plan.fields[at].name
            return map(operator.itemgetter(name), self._rows) if columns is None else columns[name]
        return map(operator.itemgetter(at), self)


def _processed(rows: Iterator[tuple[Any, ...]], at: int, process: Any) -> Iterator[tuple[Any, ...]]:
    return ((*v[:at], process(v[at]), *v[at + 1 :]) for v in rows)
