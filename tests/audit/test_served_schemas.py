"""Two databases in one process: another application's tables that only share the names of an
audited and a tenant-scoped table, made by migrations (not ``create_all``), are written by raw
SQL once that database declares its schema (``serves``); a database that declares nothing, or
the application's own, keeps the guarded names guarded."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, Database
from dalkit.audit import Audited, UnauditedWriteError
from dalkit.query.tenant import TenantScoped, UnscopedStatementError, tenant


class AppBase(DeclarativeBase):
    pass


class AppAuthor(Audited, AppBase):
    __tablename__ = "served_authors"

    id: Mapped[int] = mapped_column(primary_key=True)


class AppShop(TenantScoped, AppBase):
    __tablename__ = "served_shops"

    id: Mapped[int] = mapped_column(primary_key=True)


class OtherBase(DeclarativeBase):
    pass


class Author(OtherBase):
    """Another application's table named like the audited authors'."""

    __tablename__ = "served_authors"

    id: Mapped[int] = mapped_column(primary_key=True)


class Shop(OtherBase):
    """Another application's table named like the tenant-scoped shops'."""

    __tablename__ = "served_shops"

    id: Mapped[int] = mapped_column(primary_key=True)


MIGRATED = (
    "CREATE TABLE served_authors (id INTEGER PRIMARY KEY)",
    "CREATE TABLE served_shops (id INTEGER PRIMARY KEY)",
)
WRITES = ("INSERT INTO served_authors (id) VALUES (1)", "INSERT INTO served_shops (id) VALUES (1)")


def test_raw_sql_on_another_databases_table_of_a_guarded_name_runs_once_it_declares_its_schema(
    tmp_path: Path,
) -> None:
    app = Database(f"sqlite:///{tmp_path / 'app.db'}")
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        app.create_all(AppBase.metadata)
        with other.engine.begin() as connection:  # as its migrations would
            for ddl in MIGRATED:
                connection.exec_driver_sql(ddl)
        with tenant("a"):
            with pytest.raises(UnauditedWriteError):
                other.sql(WRITES[0])
            with pytest.raises(UnscopedStatementError):
                other.sql(WRITES[1])
            other.serves(OtherBase.metadata)
            for write in WRITES:
                other.sql(write)
            app.serves(AppBase.metadata)
            with pytest.raises(UnauditedWriteError):
                app.sql(WRITES[0])
            with pytest.raises(UnscopedStatementError):
                app.sql(WRITES[1])
        assert other.sql("SELECT count(*) AS n FROM served_authors") == [{"n": 1}]
    finally:
        app.dispose()
        other.dispose()


async def test_an_async_database_declares_its_schema_too(tmp_path: Path) -> None:
    other = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    try:
        async with other.engine.begin() as connection:
            await connection.exec_driver_sql(MIGRATED[0])
        with pytest.raises(UnauditedWriteError):
            await other.sql(WRITES[0])
        other.serves(OtherBase.metadata)
        await other.sql(WRITES[0])
    finally:
        await other.dispose()
