"""Which schemas (MetaData) and table names were created through which engine, so that a guard
reading raw SQL (the audit's, tenant scoping's) can tell a table of another application's
schema that only shares a guarded table's name (another database of the process, another test)
from the guarded one. It errs towards guarding: a guarded table counts on an engine unless that
engine is known to have created a table of its name for another schema and none for its own
(tables made by migrations or another process count, whatever else the engine created). A
database declares the schemas migrations made (`Database.serves`), which counts as creating
them."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = ["created_through", "declare_served", "of_engine"]

# keyed by the engine's pool, which the engine's option-carrying copies share
_created: weakref.WeakKeyDictionary[Any, set[sa.MetaData]] = weakref.WeakKeyDictionary()
# the lower-case names of the tables created through it
_names: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


@event.listens_for(sa.MetaData, "after_create")
def _metadata_created(metadata: sa.MetaData, connection: Any, **_: Any) -> None:
    _remember(connection, metadata)


@event.listens_for(sa.Table, "after_create")
def _table_created(table: sa.Table, connection: Any, **_: Any) -> None:
    _remember(connection, table.metadata, table.name)


def _remember(connection: Any, metadata: sa.MetaData, name: str | None = None) -> None:
    pool = getattr(getattr(connection, "engine", None), "pool", None)
    if pool is not None:  # None: Alembic's offline mode renders DDL without a database
        _created.setdefault(pool, set()).add(metadata)
        if name is not None:
            _names.setdefault(pool, set()).add(name.lower())


def declare_served(engine: Any, metadatas: Iterable[sa.MetaData]) -> None:
    """Record that ``engine``'s database holds the tables of ``metadatas`` (made by migrations
    or another process), as if they had been created through it.

    Args:
        engine: The engine.
        metadatas: The schemas.
    """
    for metadata in metadatas:
        _created.setdefault(engine.pool, set()).add(metadata)
        _names.setdefault(engine.pool, set()).update(t.name.lower() for t in metadata.sorted_tables)


def created_through(engine: Any) -> set[sa.MetaData] | None:
    """The schemas whose tables were created through ``engine``; None when none were (tables
    made by migrations or another process), or for no engine.

    Args:
        engine: An Engine, or None.
    """
    return _created.get(getattr(engine, "pool", None)) if engine is not None else None


def of_engine(tables: Iterable[sa.Table], engine: Any) -> list[sa.Table]:
    """The ``tables`` that may be the tables of ``engine``'s database: each, unless ``engine``
    is known to have created a table of its name for another schema and never created its own
    schema (then that name there is another application's table). Creating some schemas through
    an engine (dalkit's own tables) says nothing of the tables migrations made.

    Args:
        tables: Tables of any schema.
        engine: The engine a statement runs on, or None.
    """
    known = created_through(engine)
    if not known:
        return list(tables)
    names = _names.get(engine.pool, set())
    return [t for t in tables if t.metadata in known or t.name.lower() not in names]
