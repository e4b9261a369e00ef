"""Join conditions for QueryBuilder: a relationship's condition rewritten onto the tables (or
aliases, for a self-referential relationship) that the query actually joins."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import RelationshipProperty
from sqlalchemy.sql.visitors import replacement_traverse

__all__ = ["relationship_onclause"]


def relationship_onclause(
    relationship: RelationshipProperty[Any], source: sa.FromClause, target: sa.FromClause
) -> sa.ColumnElement[bool]:
    """The relationship's join condition with its remote columns on ``target`` and its local
    ones on ``source``: either may be an alias of the same table (self-referential)."""
    # the join condition holds annotated copies of the columns: compare by table and key
    remote = {(column.table, column.key) for column in relationship.remote_side}

    def replace(element: Any, **_: Any) -> Any:
        if not isinstance(element, sa.Column):
            return None
        on = target if (element.table, element.key) in remote else source
        if on is element.table:
            return None
        return on.corresponding_column(element)

    condition: sa.ColumnElement[bool] = replacement_traverse(relationship.primaryjoin, {}, replace)
    return condition
