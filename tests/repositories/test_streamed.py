"""The tuples a psycopg COPY reads while it runs are those the eager plan builds, and the checks
they defer still name the bad row by its position in the caller's rows; a NUMERIC column's
floats are converted only in a load that has one."""

from __future__ import annotations

from decimal import Decimal
from importlib import metadata
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from dalkit.errors import BulkLoadError
from dalkit.query.fields import model_info
from dalkit.repository.copy import plan_bulk
from dalkit.repository.copy_driver import streams_rows
from dalkit.repository.numerics import converting_float_numerics
from dalkit.repository.streamed import StreamedTuples, ValuesToCoerce

from .models import Price, Reading, User
from .test_behaviour_async import reading_rows

PSYCOPG = sa.create_engine("postgresql+psycopg://").dialect
SQLITE = sa.create_engine("sqlite://").dialect
DIALECTS = [PSYCOPG, SQLITE]


def _user_rows(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "email": f"u{i}@example.com", "name": f"u{i}"} for i in range(count)]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("model", "rows"),
    [
        (Reading, reading_rows(50)),  # every column given
        (User, _user_rows(50)),  # Python-side defaults fill the rest
        (Reading, [{"id": i} for i in range(50)]),  # a single column
    ],
    ids=["all-given", "defaults", "one-column"],
)
def test_streamed_tuples_are_the_eager_plans_tuples(
    dialect: Dialect, model: type[Any], rows: list[dict[str, Any]]
) -> None:
    plan = plan_bulk(model_info(model), rows[0], dialect)
    _, eager = plan.tuples(rows)
    streamed = StreamedTuples(plan, rows)
    assert len(streamed) == len(eager)
    assert list(streamed) == eager
    assert list(streamed[10:20]) == eager[10:20]
    assert (streamed[3], streamed[-1]) == (eager[3], eager[-1])


def test_slices_know_their_place_in_the_callers_rows() -> None:
    rows: list[Any] = reading_rows(100)
    plan = plan_bulk(model_info(Reading), rows[0], PSYCOPG)
    rows[57] = {"id": 57}
    part = StreamedTuples(plan, rows)[40:80][10:30]
    assert (part.offset, len(part)) == (50, 20)
    with pytest.raises(ValueError, match="steps of 1"):
        StreamedTuples(plan, rows)[::2]
    with pytest.raises(BulkLoadError) as caught:
        list(part)  # fewer fields than row 0: refused before any tuple is made
    assert caught.value.row_index == 57
    with pytest.raises(BulkLoadError) as caught:
        part.check_shapes()
    assert caught.value.row_index == 57
    rows[57] = {**reading_rows(100)[57], "buckets": 1}
    with pytest.raises(BulkLoadError):
        list(StreamedTuples(plan, rows)[40:80][10:30])  # more: none is dropped
    rows[57] = {"buckets" if k == "bucket" else k: v for k, v in reading_rows(100)[57].items()}
    part = StreamedTuples(plan, rows)[40:80][10:30]
    with pytest.raises(KeyError):
        list(part)  # as many but others: the driver's KeyError, which check_shapes() names
    with pytest.raises(BulkLoadError) as caught:
        part.check_shapes()
    assert caught.value.row_index == 57


@pytest.mark.parametrize("extra", [{"score": 5}, {"scores": 5}], ids=["defaulted", "unknown"])
def test_every_slice_refuses_a_row_naming_more_fields_than_row_0(extra: dict[str, Any]) -> None:
    rows: list[Any] = _user_rows(100)
    plan = plan_bulk(model_info(User), rows[0], PSYCOPG)
    rows[64] = {**rows[64], **extra}
    for part in (StreamedTuples(plan, rows), StreamedTuples(plan, rows)[50:100][10:20]):
        with pytest.raises(BulkLoadError, match="row 64 does not have the fields of row 0"):
            list(part)
    assert list(StreamedTuples(plan, rows)[:64]) == plan.tuples(rows[:64])[1]


def test_ranges_are_checked_on_the_callers_values_and_named_in_their_rows() -> None:
    rows = reading_rows(100)
    plan = plan_bulk(model_info(Reading), rows[0], PSYCOPG)
    StreamedTuples(plan, rows).check_ranges()  # every value fits
    rows[75] = {**rows[75], "value": -(2**31) - 1}
    with pytest.raises(BulkLoadError, match="row 75 cannot be written: value") as caught:
        StreamedTuples(plan, rows)[60:].check_ranges()
    assert caught.value.row_index == 75
    assert caught.value.row == rows[75]


@pytest.mark.parametrize(
    ("value", "error"), [(2**31, BulkLoadError), ("7", ValuesToCoerce)], ids=["range", "type"]
)
def test_a_copys_rows_are_checked_segment_by_segment_as_they_are_taken(
    value: Any, error: type[Exception]
) -> None:
    rows = reading_rows(35_000)
    plan = plan_bulk(model_info(Reading), rows[0], PSYCOPG)
    assert len(list(StreamedTuples(plan, rows, typed=False).checked())) == 35_000
    rows[12_345] = {**rows[12_345], "value": value}
    taken = 0
    with pytest.raises(error) as caught:
        for _ in StreamedTuples(plan, rows, typed=False).checked():
            taken += 1
    # refused once the driver took the segment's last row, before the later rows were made
    assert taken == 20_000
    if isinstance(caught.value, BulkLoadError):
        assert caught.value.row_index == 12_345
        assert caught.value.row == rows[12_345]


def test_processed_and_default_columns_are_range_checked_from_the_tuples() -> None:
    rows = _user_rows(10)
    plan = plan_bulk(model_info(User), rows[0], SQLITE)
    StreamedTuples(plan, rows).check_ranges()  # score's default and the processed columns fit
    rows[4] = {**rows[4], "id": 2**40}
    with pytest.raises(BulkLoadError) as caught:
        StreamedTuples(plan, rows).check_ranges()
    assert caught.value.row_index == 4


def test_only_a_load_with_a_float_for_a_numeric_column_converts_it() -> None:
    rows: list[dict[str, Any]] = [{"id": i, "exact": Decimal(i), "cents": i} for i in range(10)]
    plan = plan_bulk(model_info(Price), rows[0], PSYCOPG)
    assert converting_float_numerics(plan, rows) is plan  # no stage added to every row
    rows[7] = {"id": 7, "exact": 0.1 + 0.2, "cents": 2.675}
    converting = converting_float_numerics(plan, rows)
    assert list(StreamedTuples(converting, rows))[7] == (7, Decimal("0.3"), Decimal("2.675"))
    assert list(StreamedTuples(converting, rows))[3] == (3, Decimal(3), 3)


def test_the_copies_that_stream_are_psycopgs_and_asyncpgs_that_keep_row_text_from_the_server() -> (
    None
):
    # asyncpg before 0.32 sent an aborting exception's text to the server (MagicStack/asyncpg#1354)
    major, minor = map(int, metadata.version("asyncpg").split(".")[:2])
    assert streams_rows("asyncpg") is ((major, minor) >= (0, 32))
    assert streams_rows("psycopg")
    assert not streams_rows("aiosqlite")
    assert not streams_rows("pysqlite")
