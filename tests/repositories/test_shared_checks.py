"""The checks of a streamed COPY's segment (types, zones, integer ranges) read each field of
the caller's rows once between them, and find what each check finds reading the rows itself."""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit.engine.column_types import install
from dalkit.errors import BulkLoadError
from dalkit.query.fields import model_info
from dalkit.repository.numerics import streamed_plan
from dalkit.repository.streamed import StreamedTuples, ValuesToCoerce

from .models import Reading
from .test_behaviour_async import reading_rows

READS: collections.Counter[str] = collections.Counter()


class CountedRow(dict[str, Any]):
    """A caller's row that counts the reads of each of its fields (the checks and the COPY's
    tuples read them through ``operator.itemgetter``, which calls this)."""

    def __getitem__(self, key: str) -> Any:
        READS[key] += 1
        return super().__getitem__(key)


def _streamed(rows: list[dict[str, Any]]) -> StreamedTuples:
    engine = sa.create_engine("postgresql+psycopg://")
    install(engine)  # dalkit's datetime binding: taken_at's zones are checked, not converted
    plan, zones = streamed_plan(model_info(Reading), rows, engine.dialect, typed=False)
    assert zones == (("taken_at", False),)
    return StreamedTuples(plan, rows, typed=False, zones=zones)


def test_a_segments_checks_read_each_field_of_the_rows_once() -> None:
    rows: list[dict[str, Any]] = [CountedRow(row) for row in reading_rows(25_000)]
    streamed = _streamed(rows).checked()
    READS.clear()  # the plan read row 0's datetime
    assert len(list(streamed)) == 25_000
    # once for the COPY's tuple, once for the checks: the type, zone and range checks each
    # read the integer and datetime columns again when they did not share their lists
    assert dict(READS) == dict.fromkeys(["id", "sensor", "value", "taken_at", "bucket"], 50_000)


AWARE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("value", 2**31, BulkLoadError),
        ("id", 2**63, BulkLoadError),
        ("value", "7", ValuesToCoerce),
        ("sensor", 7, ValuesToCoerce),
        ("sensor", "x" * 41, ValuesToCoerce),
        ("taken_at", AWARE, ValuesToCoerce),
        ("taken_at", "2024-01-01", ValuesToCoerce),
    ],
    ids=["range", "bigint-range", "int-type", "str-type", "too-long", "zone", "datetime-type"],
)
def test_the_shared_checks_find_what_each_check_finds_reading_the_rows(
    field: str, value: Any, error: type[Exception]
) -> None:
    rows = reading_rows(25_000)
    rows[12_345] = {**rows[12_345], field: value}
    segment = _streamed(rows)[10_000:20_000]
    _streamed(rows)[:10_000].check()  # the rows before it pass
    with pytest.raises(error) as shared:
        segment.check()
    with pytest.raises(error) as alone:  # each check reading the rows itself
        segment.check_types()
        segment.check_ranges()
    if isinstance(shared.value, BulkLoadError):
        assert isinstance(alone.value, BulkLoadError)
        assert shared.value.row_index == alone.value.row_index == 12_345
        assert str(shared.value) == str(alone.value)
        assert shared.value.row == rows[12_345]
    taken = 0
    with pytest.raises(error):
        for _ in _streamed(rows).checked():
            taken += 1
    assert taken == 20_000  # refused at the end of the segment that has it


def test_without_the_range_check_each_check_reads_the_rows_itself() -> None:
    # asyncpg refuses a too-wide integer itself: with no range check, listing the integer
    # columns for the type check alone costs more than reading them as it goes
    rows: list[dict[str, Any]] = [CountedRow(row) for row in reading_rows(25_000)]
    streamed = _streamed(rows)
    streamed.ranges = False
    checked = streamed.checked()
    READS.clear()
    assert len(list(checked)) == 25_000
    assert dict(READS) == {
        **dict.fromkeys(["id", "sensor", "value", "bucket"], 50_000),
        "taken_at": 75_000,
    }  # its type, then its zone
