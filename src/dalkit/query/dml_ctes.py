"""The INSERT, UPDATE and DELETE statements in the WITH clause of a compiled statement
(``select(update(t).values(...).returning(t.c.id).cte())``): PostgreSQL runs them whatever the
outer statement is, a SELECT included, so the statement hooks that must see every write (the
audit's guard, the query cache's invalidation) ask here.

Found once per compiled form and kept on it: SQLAlchemy compiles a statement once and reuses
the form, so after the first execution a statement costs these hooks one attribute look-up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import CTE, UpdateBase

__all__ = ["cte_writes"]

_FOUND = "_dalkit_cte_writes"  # the Compiled's attribute


def cte_writes(compiled: Any) -> tuple[UpdateBase, ...]:
    """The INSERT/UPDATE/DELETE constructs in the CTEs of ``compiled``'s statement.

    Args:
        compiled: A Compiled (``context.compiled`` of a statement hook).
    """
    found: tuple[UpdateBase, ...] | None = getattr(compiled, _FOUND, None)
    if found is None:
        found = tuple(
            element.element
            for element in visitors.iterate(compiled.statement)
            if isinstance(element, CTE) and isinstance(element.element, UpdateBase)
        )
        setattr(compiled, _FOUND, found)
    return found
