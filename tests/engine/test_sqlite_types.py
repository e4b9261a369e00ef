"""dalkit's SQLite engines refuse a float NaN, which SQLite would store as NULL, on every write
path, with a typed error."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import BulkLoadError, Database, DatabaseError, Repository


class Base(DeclarativeBase):
    pass


class Sample(Base):
    __tablename__ = "float_samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Float)


class Samples(Repository[Sample]):
    pass


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'types.db'}")
    database.create_all(Base.metadata)
    yield database
    database.dispose()


WRITES: dict[str, Callable[[Samples], object]] = {
    "add": lambda samples: samples.add(Sample(id=1, value=math.nan)),
    "update": lambda samples: samples.update(samples.add(Sample(id=2, value=1.0)), value=math.nan),
    "upsert": lambda samples: samples.upsert({"id": 3, "value": math.nan}, on=["id"]),
    "bulk_insert": lambda samples: samples.bulk_insert([{"id": 4, "value": math.nan}]),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_nan_is_refused_where_sqlite_would_store_null(db: Database, write: str) -> None:
    expected = BulkLoadError if write == "bulk_insert" else DatabaseError
    with pytest.raises(expected, match="NaN"), db.transaction() as session:
        WRITES[write](Samples(session))
    assert db.sql("SELECT id, value FROM float_samples") == []


def test_infinities_are_still_stored(db: Database) -> None:
    with db.transaction() as session:
        Samples(session).add_many([Sample(id=1, value=math.inf), Sample(id=2, value=-math.inf)])
    assert db.sql("SELECT value FROM float_samples ORDER BY id") == [
        {"value": math.inf},
        {"value": -math.inf},
    ]
