"""Column defaults written as functions of the statement's context (``default=lambda context:
...``) run where no SQLAlchemy statement gives them one: the in-memory repository, and an
upsert's DO UPDATE. They get a `RowContext`, holding the row's values as SQLAlchemy's context
gives them; what it cannot give raises ConfigurationError instead of the AttributeError that
calling them with None raised. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.schema import ColumnDefault

from dalkit.errors import ConfigurationError

__all__ = ["RowContext", "context_default", "of_context"]


def of_context(default: ColumnDefault) -> bool:
    """Whether ``default`` is a function of the statement's context.

    Args:
        default: A column's client-side default or onupdate.
    """
    # SQLAlchemy wraps a function of no argument in one of the context, and keeps one of one
    # argument as it is (its _fn is what was given); None would reach the latter
    return default.is_callable and default.arg is getattr(default, "_fn", None)


def context_default(
    column: sa.Column[Any], *, update: bool = False
) -> Callable[[Mapping[str, Any] | None], Any] | None:
    """``column``'s INSERT default (``update``: onupdate) when it is a function of the
    statement's context, as a function of the row's values by column key (None: no row's
    values, see `RowContext`); None for any other default.

    Args:
        column: The column.
        update: Whether the onupdate is wanted rather than the INSERT default.

    Returns:
        The function, or None.
    """
    default = column.onupdate if update else column.default
    if not isinstance(default, ColumnDefault) or not of_context(default):
        return None
    function, name = default.arg, f"{column.table.name}.{column.name}"
    return lambda parameters: function(
        RowContext(None if parameters is None else dict(parameters), name)
    )


class RowContext:
    """What a default written as a function of the statement's context is given where no
    SQLAlchemy statement gives one: the row's values by column key, through
    ``get_current_parameters()`` and ``current_parameters`` as SQLAlchemy's context gives
    them, or (None) no values, for a SET that serves every row. What it cannot give raises
    ConfigurationError naming the column."""

    __slots__ = ("_column", "_parameters")

    def __init__(self, parameters: dict[str, Any] | None, column: str) -> None:
        self._parameters = parameters
        self._column = column

    @property
    def current_parameters(self) -> dict[str, Any]:
        return self.get_current_parameters()

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        """The row's values by column key.

        Args:
            isolate_multiinsert_groups: Accepted as SQLAlchemy's; one row is one group here.

        Returns:
            The values.

        Raises:
            ConfigurationError: For an upsert's DO UPDATE, whose one SET has no row's values.
        """
        if self._parameters is None:
            raise ConfigurationError(
                f"the onupdate of {self._column} reads the statement's parameters, which an "
                f"upsert's DO UPDATE does not have (one SET serves every row): name the field "
                f"in update=, or use update_many"
            )
        return self._parameters

    def __getattr__(self, name: str) -> Any:
        raise ConfigurationError(
            f"the default of {self._column} reads context.{name}, which only SQLAlchemy's own "
            f"statements give; here it gets get_current_parameters() only"
        )
