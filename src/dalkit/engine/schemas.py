"""Which schemas (MetaData) were created through which engine, so that a guard reading raw SQL
(the audit's, tenant scoping's) checks a table name against the tables of that engine's
database only: a table of the same name in another application's schema (another database of
the process, another test) is not mistaken for a guarded one."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = ["created_through", "of_engine"]

# keyed by the engine's pool, which the engine's option-carrying copies share
_created: weakref.WeakKeyDictionary[Any, set[sa.MetaData]] = weakref.WeakKeyDictionary()


@event.listens_for(sa.MetaData, "after_create")
def _metadata_created(metadata: sa.MetaData, connection: Any, **_: Any) -> None:
    _remember(connection, metadata)


@event.listens_for(sa.Table, "after_create")
def _table_created(table: sa.Table, connection: Any, **_: Any) -> None:
    _remember(connection, table.metadata)


def _remember(connection: Any, metadata: sa.MetaData) -> None:
    pool = getattr(getattr(connection, "engine", None), "pool", None)
    if pool is not None:  # None: Alembic's offline mode renders DDL without a database
        _created.setdefault(pool, set()).add(metadata)


def created_through(engine: Any) -> set[sa.MetaData] | None:
    """The schemas whose tables were created through ``engine``; None when none were (tables
    made by migrations or another process), or for no engine.

    Args:
        engine: An Engine, or None.
    """
    return _created.get(getattr(engine, "pool", None)) if engine is not None else None


def of_engine(tables: Iterable[sa.Table], engine: Any) -> list[sa.Table]:
    """The ``tables`` of the schemas created through ``engine``; all of them when it is not
    known what was created through it.

    Args:
        tables: Tables of any schema.
        engine: The engine a statement runs on, or None.
    """
    known = created_through(engine)
    return [table for table in tables if table.metadata in known] if known else list(tables)
