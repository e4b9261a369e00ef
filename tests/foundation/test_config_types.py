"""DatabaseConfig option types: a wrong type is a ConfigurationError naming the option and the
type it takes, when the database is built (not a raw TypeError, nor a failure at the first
query), and never shows the value."""

from __future__ import annotations

import dataclasses
import functools
import math
from types import MappingProxyType
from typing import Any

import pytest

from dalkit import AsyncDatabase, ConfigurationError, Database, DatabaseConfig
from dalkit.config_checks import OPTION_TYPES

SECRET = "s3cr3t-Pa55-w0rd-long-enough"

NUMBER = r"a number \(int or float\)"
WRONG_TYPES = [
    ("pool_timeout", "abc", NUMBER, "str"),
    ("pool_timeout", None, NUMBER, "None"),
    ("pool_timeout", True, NUMBER, "bool"),
    ("pool_recycle", "x", NUMBER, "str"),
    ("pool_recycle", None, NUMBER, "None"),
    ("connect_timeout_s", "x", NUMBER, "str"),
    ("leak_threshold_s", "x", NUMBER + ", or None", "str"),
    ("statement_timeout_ms", "1000", NUMBER + ", or None", "str"),
    ("sqlite_busy_timeout_ms", "x", NUMBER, "str"),
    ("sqlite_busy_timeout_ms", False, NUMBER, "bool"),
    ("max_idle_s", [], NUMBER + ", or None", "list"),
    ("pool_log_interval_s", "60", NUMBER + ", or None", "str"),
    ("slow_query_ms", "x", NUMBER + ", or None", "str"),
    ("slow_query_ms", True, NUMBER + ", or None", "bool"),
    ("pool_size", "5", "an integer", "str"),
    ("pool_size", True, "an integer", "bool"),
    ("max_overflow", 2.5, "an integer", "float"),
    ("min_size", True, "an integer", "bool"),
    ("max_queries", "100", "an integer, or None", "str"),
    ("nplusone_threshold", "10", "an integer", "str"),
    ("query_stats_size", True, "an integer", "bool"),
    ("pool_pre_ping", "no", "a bool", "str"),
    ("pool_pre_ping", 0, "a bool", "int"),
    ("query_stats", "no", "a bool", "str"),
    ("echo", "yes", "a bool or 'debug'", "str"),
    ("application_name", 7, "a string, or None", "int"),
    ("nplusone", 1, "a string", "int"),
    ("connect_args", [("sslmode", "require")], "a mapping", "list"),
    ("init", "register_codecs", "a callable, or None", "str"),
]


@pytest.mark.parametrize("api", [Database, AsyncDatabase])
@pytest.mark.parametrize(("option", "value", "expected", "got"), WRONG_TYPES)
def test_a_wrong_type_is_refused_when_the_database_is_built(
    api: type[Database] | type[AsyncDatabase],
    option: str,
    value: object,
    expected: str,
    got: str,
) -> None:
    # the URL is never connected to: the error must come before any connection
    url = f"postgresql://app:{SECRET}@127.0.0.1:1/app"
    options: dict[str, Any] = {option: value}
    with pytest.raises(
        ConfigurationError, match=f"^{option} must be {expected}.*; got {got}$"
    ) as caught:
        api(url, **options)
    assert SECRET not in str(caught.value)


def test_every_option_has_a_checked_type() -> None:
    options = {field.name for field in dataclasses.fields(DatabaseConfig)} - {"url"}
    assert set(OPTION_TYPES) == options


@pytest.mark.parametrize(
    "options",
    [
        {"secret_key": SECRET.encode()},
        {"connect_args": [("password", SECRET)]},
        {"application_name": SECRET.encode()},
    ],
)
def test_a_wrong_type_error_never_shows_the_value(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        DatabaseConfig.from_url(f"postgresql://app:{SECRET}@127.0.0.1:1/app", **options)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "options",
    [
        {"pool_timeout": math.nan},
        {"connect_timeout_s": math.nan},
        {"leak_threshold_s": math.nan},
        {"statement_timeout_ms": math.nan},
    ],
)
def test_nan_is_out_of_range(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="must be"):
        DatabaseConfig.from_url("sqlite:///x.db", **options)


def test_values_valid_before_the_type_checks_are_still_accepted() -> None:
    config = DatabaseConfig.from_url(
        "postgresql://app@127.0.0.1:1/app",
        pool_timeout=5,  # ints where seconds are floats
        connect_timeout_s=2,
        leak_threshold_s=None,  # None where it turns an option off
        statement_timeout_ms=1500.0,  # floats where milliseconds are ints
        pool_recycle=-1,  # SQLAlchemy's "never"
        sqlite_busy_timeout_ms=2500.0,
        max_idle_s=30,
        pool_log_interval_s=None,
        slow_query_ms=0,
        echo="debug",
        application_name=None,
        connect_args=MappingProxyType({"sslmode": "disable"}),
        init=functools.partial(print, end=""),
        nplusone="warn",
    )
    # echo="debug" is outside the annotation but is SQLAlchemy's: compare as plain objects
    kept: tuple[object, ...] = (config.pool_timeout, config.statement_timeout_ms, config.echo)
    assert kept == (5, 1500.0, "debug")


def test_number_options_of_another_numeric_type_work_at_the_first_query(sqlite_url: str) -> None:
    with Database(sqlite_url, sqlite_busy_timeout_ms=2500.0, pool_recycle=600.0) as db:
        assert db.sql("SELECT 1 AS one") == [{"one": 1}]


def test_from_env_still_parses_every_option_type() -> None:
    env = {
        "DALKIT_DATABASE_URL": "sqlite:///env.db",
        "DALKIT_DATABASE_POOL_TIMEOUT": "2.5",
        "DALKIT_DATABASE_POOL_RECYCLE": "600",
        "DALKIT_DATABASE_ECHO": "off",
        "DALKIT_DATABASE_QUERY_STATS": "yes",
        "DALKIT_DATABASE_STATEMENT_TIMEOUT_MS": "none",
        "DALKIT_DATABASE_APPLICATION_NAME": "worker",
        "DALKIT_DATABASE_NPLUSONE": "raise",
        "DALKIT_DATABASE_SLOW_QUERY_MS": "250",
    }
    config = DatabaseConfig.from_env(env)
    assert (config.pool_timeout, config.pool_recycle) == (2.5, 600)
    assert (config.echo, config.query_stats, config.statement_timeout_ms) == (False, True, None)
    assert (config.application_name, config.nplusone, config.slow_query_ms) == (
        "worker",
        "raise",
        250.0,
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pool_timeout", math.inf),
        ("connect_timeout_s", 1e12),
        ("statement_timeout_ms", math.inf),
        ("sqlite_busy_timeout_ms", math.nan),
        ("sqlite_busy_timeout_ms", -1),
        ("pool_log_interval_s", math.inf),
        ("leak_threshold_s", 10 * 86_400),
        ("pool_recycle", math.inf),
        ("slow_query_ms", math.nan),
    ],
)
def test_an_endless_or_impossible_wait_is_refused_when_the_database_is_built(
    option: str, value: float
) -> None:
    # the standard library's limits would turn it into an OverflowError at the first wait
    with pytest.raises(ConfigurationError, match=option):
        options: dict[str, Any] = {option: value}
        Database("postgresql://app:secret@db.internal/app", **options)


def test_from_env_refuses_an_infinite_timeout() -> None:
    env = {
        "DALKIT_DATABASE_URL": "postgresql://app:secret@db.internal/app",
        "DALKIT_DATABASE_CONNECT_TIMEOUT_S": "inf",
    }
    with pytest.raises(ConfigurationError, match="connect_timeout_s") as refused:
        DatabaseConfig.from_env(env)
    assert "secret" not in str(refused.value)
