"""DatabaseConfig: parsing, environment, validation and secret masking."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dalkit import AsyncDatabase, ConfigurationError, Database, DatabaseConfig

SECRET = "s3cr3t-Pa55"


def test_repr_and_str_never_show_the_password() -> None:
    config = DatabaseConfig.from_url(f"postgresql://app:{SECRET}@db.example:5432/app")
    db = Database(config)
    for text in (repr(config), str(config), repr(db), str(db), db.url, config.safe_url):
        assert SECRET not in text
    assert "***" in config.safe_url


def test_from_env_reads_the_url_and_typed_options() -> None:
    env = {
        "DALKIT_DATABASE_URL": "sqlite:///./env.db",
        "DALKIT_DATABASE_POOL_SIZE": "7",
        "DALKIT_DATABASE_POOL_PRE_PING": "false",
        "DALKIT_DATABASE_LEAK_THRESHOLD_S": "2.5",
    }
    config = DatabaseConfig.from_env(env)
    assert config.url.database == "./env.db"
    assert config.pool_size == 7
    assert config.pool_pre_ping is False
    assert config.leak_threshold_s == 2.5


def test_from_env_without_a_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="DALKIT_DATABASE_URL is not set"):
        DatabaseConfig.from_env({"DALKIT_DATABASE_POOL_SIZE": "3"})


@pytest.mark.parametrize("api", [Database, AsyncDatabase])
def test_database_from_env_without_a_url_opens_nothing(
    api: type[Database] | type[AsyncDatabase],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("DALKIT_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="DALKIT_DATABASE_URL"):
        api.from_env()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("DALKIT_DATABASE_POOL_SIZ", "DALKIT_DATABASE_POOL_SIZE"),
        ("DALKIT_DATABASE_URI", "DALKIT_DATABASE_URL"),
        ("DALKIT_DATABASE_MAXQUERIES", "DALKIT_DATABASE_MAX_QUERIES"),
    ],
)
def test_an_unknown_environment_variable_names_the_close_match(variable: str, meant: str) -> None:
    env = {"DALKIT_DATABASE_URL": "sqlite:///x.db", variable: "5"}
    with pytest.raises(ConfigurationError, match=f"{variable}; did you mean {meant}"):
        DatabaseConfig.from_env(env)


def test_an_unknown_environment_variable_without_a_close_match_is_still_refused() -> None:
    env = {"DALKIT_DATABASE_URL": "sqlite:///x.db", "DALKIT_DATABASE_ZZZ": "1"}
    with pytest.raises(ConfigurationError, match="unknown environment variable"):
        DatabaseConfig.from_env(env)


def test_pool_upkeep_options_come_from_the_environment() -> None:
    env = {
        "DALKIT_DATABASE_URL": "sqlite:///x.db",
        "DALKIT_DATABASE_MIN_SIZE": "2",
        "DALKIT_DATABASE_MAX_QUERIES": "100",
        "DALKIT_DATABASE_MAX_IDLE_S": "30",
        "DALKIT_DATABASE_POOL_LOG_INTERVAL_S": "60",
    }
    config = DatabaseConfig.from_env(env)
    assert (config.min_size, config.max_queries) == (2, 100)
    assert (config.max_idle_s, config.pool_log_interval_s) == (30.0, 60.0)


def test_keyword_options_win_over_the_environment() -> None:
    env = {"DALKIT_DATABASE_URL": "sqlite:///x.db", "DALKIT_DATABASE_POOL_SIZE": "7"}
    config = DatabaseConfig.from_env(env, pool_size=2)
    assert config.pool_size == 2


def test_database_from_env_uses_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("DALKIT_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DALKIT_DATABASE_POOL_SIZE", "3")
    db = Database.from_env()
    try:
        assert db.config.pool_size == 3
        assert db.health_check().ok
    finally:
        db.dispose()


def test_an_invalid_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="DALKIT_DATABASE_POOL_SIZE"):
        DatabaseConfig.from_env(
            {"DALKIT_DATABASE_URL": "sqlite:///x.db", "DALKIT_DATABASE_POOL_SIZE": "many"}
        )


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("not a url", "malformed database URL"),
        (f"postgresql://app:{SECRET}@[::1", "malformed database URL"),
        ("mysql://app@localhost/app", "dalkit supports postgresql and sqlite"),
        ("postgresql+pg8000://app@localhost/app", "use one of postgresql+"),
        ("sqlite+aiosqlite:///x.db", "only works with AsyncDatabase"),
        # two slashes: SQLAlchemy's ArgumentError before, raised by create_engine
        ("sqlite://app.db", "sqlite:///app.db for a path relative"),
        ("sqlite+pysqlite://data/app.db", "sqlite:///data/app.db for a path relative"),
        (f"postgres://app:{SECRET}@localhost/app", "write the URL as postgresql://"),
    ],
)
def test_a_bad_url_raises_configuration_error_naming_the_fix(url: str, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=fix) as caught:
        Database(url)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None or SECRET not in str(caught.value.__cause__)


def test_a_sync_driver_is_refused_by_the_async_database() -> None:
    with pytest.raises(ConfigurationError, match="only works with Database"):
        AsyncDatabase("sqlite+pysqlite:///x.db")


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec_without_asyncpg(name: str, package: str | None = None) -> object:
        return None if name == "asyncpg" else real_find_spec(name, package)

    # simulates an install without the postgres extra; the database itself is never touched
    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_asyncpg)
    with pytest.raises(ConfigurationError, match=r"pip install 'dalkit\[postgres\]'"):
        AsyncDatabase("postgresql://app@localhost/app")


@pytest.mark.parametrize(
    "options",
    [
        {"pool_size": -1},
        {"pool_timeout": 0},
        {"leak_threshold_s": 0},
        {"pool_sizes": 3},
        {"min_size": 6},
        {"min_size": -1},
        {"max_queries": 0},
        {"max_idle_s": 0},
        {"pool_log_interval_s": -1},
    ],
)
def test_invalid_options_raise_configuration_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        DatabaseConfig.from_url("sqlite:///x.db", **options)


def test_logging_the_engine_url_masks_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = Database(f"postgresql://app:{SECRET}@127.0.0.1:1/app", connect_timeout_s=1)
    logging.getLogger("test").info("using %s / %r / %s", db, db.config, db.engine.url)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("option", [{"max_queries": 10}, {"max_idle_s": 5.0}])
def test_replacing_the_connection_of_an_in_memory_database_is_refused(
    option: dict[str, object],
) -> None:
    with pytest.raises(ConfigurationError, match="in-memory SQLite"):
        DatabaseConfig.from_url("sqlite://", **option)
