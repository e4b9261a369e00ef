"""``ObserveSettings``: what a database observes (N+1 detection, slow-query log, statement
statistics), and the process default of the N+1 mode. No I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from dalkit.errors import ConfigurationError
from dalkit.observe.nplusone import NPlusOneMode, check_mode

__all__ = ["ObserveSettings", "checked_top", "set_default_nplusone"]

_default_nplusone: NPlusOneMode = "off"


def set_default_nplusone(mode: NPlusOneMode) -> None:
    """Set the N+1 mode of databases that do not choose one (``"warn"`` under the pytest
    plugin).

    Args:
        mode: ``"off"``, ``"warn"`` or ``"raise"``.

    Raises:
        ConfigurationError: ``mode`` is none of those.
    """
    global _default_nplusone
    _default_nplusone = check_mode(mode)


@dataclasses.dataclass(frozen=True)
class ObserveSettings:
    """What to observe.

    Attributes:
        nplusone: N+1 detection: ``"off"``, ``"warn"`` or ``"raise"``; None takes the process
            default (see ``set_default_nplusone``). Unused ``load=[...]`` paths are warned
            about under ``"warn"`` and ``"raise"``.
        nplusone_threshold: Runs of one statement shape in a transaction that make an N+1.
        slow_query_ms: Statements at least this slow are logged; None turns the log off.
        query_stats: Keep per-shape statement statistics.
        query_stats_size: At most this many statement shapes are kept.

    Raises:
        ConfigurationError: A value out of range.
    """

    nplusone: NPlusOneMode | None = None
    nplusone_threshold: int = 10
    slow_query_ms: float | None = None
    query_stats: bool = True
    query_stats_size: int = 500

    def __post_init__(self) -> None:
        if self.nplusone is not None:
            check_mode(self.nplusone)
        if self.slow_query_ms is not None and (
            isinstance(self.slow_query_ms, bool) or not self.slow_query_ms >= 0
        ):
            raise ConfigurationError("slow_query_ms must be zero or positive, or None")
        if not isinstance(self.query_stats_size, int) or self.query_stats_size < 1:
            raise ConfigurationError("query_stats_size must be a positive integer")

    @classmethod
    def coerce(cls, value: object = None) -> ObserveSettings:
        """Settings from a value given as the database's ``observe`` option.

        Args:
            value: None (the defaults), settings, a mapping of these names, or any object
                with these attributes (a ``DatabaseConfig`` carrying them).

        Returns:
            The settings.

        Raises:
            ConfigurationError: An unknown name, or a value out of range.
        """
        if value is None or isinstance(value, cls):
            return value or cls()
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(value, Mapping):
            unknown = set(value) - set(names)
            if unknown:
                raise ConfigurationError(f"unknown observe option(s): {', '.join(sorted(unknown))}")
            return cls(**value)
        return cls(**{n: getattr(value, n) for n in names if hasattr(value, n)})

    @property
    def nplusone_mode(self) -> NPlusOneMode:
        """The N+1 mode in force: the one chosen, else the process default."""
        return self.nplusone if self.nplusone is not None else _default_nplusone


def checked_top(top: int | None) -> int | None:
    """``top`` of ``query_stats(top=...)``, checked: a number of shapes, 0 or more, or None."""
    if top is None or (type(top) is int and top >= 0):
        return top  # a negative one would slice the fastest shapes off
    raise ConfigurationError(f"top must be a number of shapes, 0 or more, or None; got {top!r}")
