"""The type and range of each DatabaseConfig option, checked when a config is built.

Owns OPTION_TYPES, what every option except ``url`` accepts, and the ConfigurationError for a
value outside it. The error names the option and the expected type, and shows the value's type,
never the value: some options (``secret_key``, ``connect_args``) hold secrets. Checks that involve
the URL or the secrets themselves stay in dalkit.config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from dalkit.errors import ConfigurationError

__all__ = [
    "BOOL",
    "INT",
    "NUMBER",
    "OPTION_TYPES",
    "OptionType",
    "check_options",
    "check_types",
    "check_wait",
]


class OptionType(NamedTuple):
    """What one option accepts."""

    #: the accepted type in words, for the error ("an integer", "a number", ...)
    expected: str
    #: whether a value (other than None) is of that type
    test: Callable[[object], bool]
    #: whether None is accepted too: it means "off" or "the default" where documented
    optional: bool = False


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but pool_size=True is a mistake, not a pool of one
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    # ints are fine where seconds are floats, and floats where milliseconds are ints: SQLAlchemy,
    # the drivers and PostgreSQL take both; strings are not parsed here (from_env parses them)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bool(value: object) -> bool:
    # a truthy "no" or "false" would turn the option on
    return isinstance(value, bool)


def _is_echo(value: object) -> bool:
    # SQLAlchemy's echo also takes "debug" (statements and result rows)
    return isinstance(value, bool) or value == "debug"


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_mapping(value: object) -> bool:
    return isinstance(value, Mapping)


INT = OptionType("an integer", _is_int)
NUMBER = OptionType("a number (int or float)", _is_number)
BOOL = OptionType("a bool (True or False)", _is_bool)

OPTION_TYPES: Mapping[str, OptionType] = {
    "pool_size": INT,
    "max_overflow": INT,
    "pool_timeout": NUMBER,
    "pool_recycle": NUMBER,
    "pool_pre_ping": BOOL,
    "echo": OptionType("a bool or 'debug'", _is_echo),
    "connect_args": OptionType("a mapping (dict) of driver arguments", _is_mapping),
    "connect_timeout_s": NUMBER,
    "statement_timeout_ms": NUMBER._replace(optional=True),
    "application_name": OptionType("a string", _is_str, optional=True),
    "leak_threshold_s": NUMBER._replace(optional=True),
    "sqlite_busy_timeout_ms": NUMBER,
    "init": OptionType("a callable", callable, optional=True),
    "secret_key": OptionType("a string", _is_str, optional=True),
    "min_size": INT,
    "max_queries": INT._replace(optional=True),
    "max_idle_s": NUMBER._replace(optional=True),
    "pool_log_interval_s": NUMBER._replace(optional=True),
    # the values themselves ("off", "warn", "raise") are checked by dalkit.observe
    "nplusone": OptionType("a string ('off', 'warn' or 'raise')", _is_str, optional=True),
    "nplusone_threshold": INT,
    "slow_query_ms": NUMBER._replace(optional=True),
    "query_stats": BOOL,
    "query_stats_size": INT,
}


def check_options(config: object) -> None:
    """Check the type of every option of ``config``, then the range of those that have one.

    Args:
        config: A DatabaseConfig being built.

    Raises:
        ConfigurationError: For a value of the wrong type or out of range, naming the option.
    """
    values = {name: getattr(config, name) for name in OPTION_TYPES}
    check_types(values, OPTION_TYPES)
    _check_ranges(values)


def check_types(values: Mapping[str, Any], types: Mapping[str, OptionType]) -> None:
    """Check that each option in ``types`` is of its type (RedisConfig's too).

    Args:
        values: Each option's value, by name.
        types: What each option accepts.

    Raises:
        ConfigurationError: For the first value of the wrong type, naming the option.
    """
    for name, option in types.items():
        value = values[name]
        if value is None and option.optional:
            continue
        if not option.test(value):
            or_none = ", or None" if option.optional else ""
            got = "None" if value is None else type(value).__name__
            raise ConfigurationError(f"{name} must be {option.expected}{or_none}; got {got}")


#: the longest wait any timeout may ask for: a day. Past it the standard library's own limits
#: turn an infinite or huge value into an OverflowError at the first wait or connection
_LONGEST_S = 86_400.0
_WAITS = (
    "pool_timeout",
    "connect_timeout_s",
    "leak_threshold_s",
    "max_idle_s",
    "pool_log_interval_s",
    "statement_timeout_ms",
    "sqlite_busy_timeout_ms",
)


def check_wait(name: str, value: float | None, *, is_wait: bool = True) -> None:
    """Check that a number of seconds (milliseconds for a name ending in ``_ms``) is finite and,
    for a wait, at most a day.

    Args:
        name: The option, for the error.
        value: Its value; None passes.
        is_wait: Whether the day's limit applies too.

    Raises:
        ConfigurationError: For NaN, an infinity, or a wait of more than a day.
    """
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number; got {value!r}")
    seconds = value / 1000.0 if name.endswith("_ms") else value
    if is_wait and seconds > _LONGEST_S:
        raise ConfigurationError(f"{name} may ask for a day at the most; got {value!r}")


def _check_finite(values: Mapping[str, Any]) -> None:
    for name in (*_WAITS, "pool_recycle", "slow_query_ms"):
        check_wait(name, values[name], is_wait=name in _WAITS)


def _check_ranges(values: Mapping[str, Any]) -> None:
    _check_finite(values)  # NaN and infinities first: the comparisons below take numbers
    for name in ("pool_size", "max_overflow"):
        if values[name] < 0:
            raise ConfigurationError(f"{name} must be a non-negative integer")
    for name in ("pool_timeout", "connect_timeout_s"):
        if not values[name] > 0:
            raise ConfigurationError(f"{name} must be positive")
    for name in ("leak_threshold_s", "max_idle_s", "pool_log_interval_s"):
        if values[name] is not None and not values[name] > 0:
            raise ConfigurationError(f"{name} must be positive, or None to turn it off")
    timeout = values["statement_timeout_ms"]
    if timeout is not None and timeout < 0:
        raise ConfigurationError("statement_timeout_ms must be zero or positive, or None")
    if values["sqlite_busy_timeout_ms"] < 0:
        raise ConfigurationError("sqlite_busy_timeout_ms must be zero or positive")
    if not 0 <= values["min_size"] <= values["pool_size"]:
        raise ConfigurationError("min_size must be an integer from 0 to pool_size")
    if values["max_queries"] is not None and values["max_queries"] < 1:
        raise ConfigurationError("max_queries must be a positive integer, or None")
