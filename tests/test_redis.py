"""RedisManager and AsyncRedisManager against a real redis-server: health, pool gauges, secrets."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

import dalkit
from dalkit import AsyncRedisManager, ConfigurationError, RedisManager
from dalkit.redis.config import RedisConfig

SECRET = "hunter2-secret"
# port 1 on loopback: nothing listens there, the refusal is immediate
UNREACHABLE = f"redis://:{SECRET}@127.0.0.1:1/0"


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


def _clients_named(redis_url: str, name: str) -> int:
    with redis.Redis.from_url(redis_url) as admin:
        return sum(1 for client in admin.client_list() if client["name"] == name)


@pytest.fixture
def acl_user(redis_url: str) -> Iterator[str]:
    """A Redis user with a known password, so a wrong one can be refused for real."""
    name = f"dalkit_{uuid.uuid4().hex[:8]}"
    with redis.Redis.from_url(redis_url) as admin:
        admin.acl_setuser(
            name, enabled=True, passwords=["+right-Pa55word"], keys="*", commands=["+@all"]
        )
        try:
            yield name
        finally:
            admin.acl_deluser(name)


def test_a_healthy_server_reports_latency_version_and_database(redis_url: str) -> None:
    with RedisManager(redis_url) as manager:
        result = manager.health_check()
    assert result.ok
    assert result.error is None
    assert result.latency_ms > 0
    assert result.server_version is not None
    assert result.server_version[0].isdigit()
    assert result.database == "0"
    assert result.backend == "redis"


async def test_a_healthy_server_reports_the_same_to_the_async_manager(redis_url: str) -> None:
    async with AsyncRedisManager(redis_url) as manager:
        result = await manager.health_check()
    assert result.ok
    assert result.server_version


def test_the_client_shares_the_managers_pool(redis_url: str) -> None:
    key = f"dalkit-test:{uuid.uuid4().hex}"
    with RedisManager(redis_url, max_connections=7) as manager:
        manager.client.set(key, b"value", ex=60)
        assert manager.client.get(key) == b"value"
        assert manager.client.connection_pool is manager.pool
        assert manager.pool_status() == {
            "created": 1,
            "available": 1,
            "in_use": 0,
            "max_connections": 7,
        }
        manager.client.delete(key)


def test_pool_status_counts_a_connection_held_by_a_subscriber(redis_url: str) -> None:
    with RedisManager(redis_url) as manager:
        manager.client.ping()
        pubsub = manager.client.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe("dalkit-test")
        try:
            status = manager.pool_status()
        finally:
            pubsub.close()
    # the subscriber took the connection PING had returned to the pool
    assert status == {"created": 1, "available": 0, "in_use": 1, "max_connections": 50}


async def test_async_pool_status_counts_a_held_connection(redis_url: str) -> None:
    async with AsyncRedisManager(redis_url, max_connections=3) as manager:
        pubsub = manager.client.pubsub()
        await pubsub.subscribe("dalkit-test")
        try:
            await manager.client.ping()
            status = manager.pool_status()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    # PING needed a second connection while the subscriber held the first
    assert status == {"created": 2, "available": 1, "in_use": 1, "max_connections": 3}


def test_close_disconnects_and_the_manager_still_works_afterwards(redis_url: str) -> None:
    name = f"dalkit-test-{uuid.uuid4().hex[:8]}"
    manager = RedisManager(redis_url, client_name=name)
    manager.client.ping()
    assert _clients_named(redis_url, name) == 1
    manager.close()
    assert _clients_named(redis_url, name) == 0
    assert manager.health_check().ok
    manager.close()


async def test_async_close_disconnects_the_pool(redis_url: str) -> None:
    name = f"dalkit-test-{uuid.uuid4().hex[:8]}"
    async with AsyncRedisManager(redis_url, client_name=name) as manager:
        await manager.client.ping()
        assert _clients_named(redis_url, name) == 1
    assert _clients_named(redis_url, name) == 0


def test_from_env_reads_dalkit_redis_url(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALKIT_REDIS_URL", redis_url)
    with RedisManager.from_env(max_connections=4) as manager:
        assert manager.url == redis_url
        assert manager.pool_status()["max_connections"] == 4
        assert manager.health_check().ok


def test_from_env_defaults_to_the_local_server() -> None:
    assert RedisConfig.from_env({}).url == "redis://localhost:6379/0"


def test_an_unreachable_server_is_unhealthy_without_raising_or_leaking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with RedisManager(UNREACHABLE, socket_connect_timeout_s=2) as manager:
        result = manager.health_check()
        shown = f"{manager!r} {manager} {manager.config} {manager.url}"
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("ConnectionError")
    assert result.url == "redis://:***@127.0.0.1:1/0"
    assert SECRET not in repr(result) + shown + caplog.text


async def test_an_unreachable_server_is_unhealthy_for_the_async_manager() -> None:
    async with AsyncRedisManager(UNREACHABLE, socket_connect_timeout_s=2) as manager:
        result = await manager.health_check()
    assert not result.ok
    assert result.error is not None
    assert SECRET not in repr(result) + repr(manager)


def test_a_wrong_password_is_unhealthy_and_never_shown(redis_url: str, acl_user: str) -> None:
    wrong = _with_credentials(redis_url, acl_user, "Wr0ng-Pa55word")
    with RedisManager(wrong) as manager:
        result = manager.health_check()
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("AuthenticationError")
    assert "Wr0ng-Pa55word" not in repr(result) + repr(manager)


async def test_a_wrong_password_is_unhealthy_for_the_async_manager(
    redis_url: str, acl_user: str
) -> None:
    wrong = _with_credentials(redis_url, acl_user, "Wr0ng-Pa55word")
    async with AsyncRedisManager(wrong) as manager:
        result = await manager.health_check()
    assert not result.ok
    assert result.error is not None
    assert "AuthenticationError" in result.error
    assert "Wr0ng-Pa55word" not in repr(result)


def test_the_right_password_is_accepted(redis_url: str, acl_user: str) -> None:
    with RedisManager(_with_credentials(redis_url, acl_user, "right-Pa55word")) as manager:
        assert manager.health_check().ok
        assert "right-Pa55word" not in manager.url


def test_a_user_denied_info_is_still_healthy_without_a_version(redis_url: str) -> None:
    name = f"dalkit_{uuid.uuid4().hex[:8]}"
    with redis.Redis.from_url(redis_url) as admin:
        admin.acl_setuser(
            name, enabled=True, passwords=["+pw"], commands=["+@all", "-info"], keys="*"
        )
        try:
            with RedisManager(_with_credentials(redis_url, name, "pw")) as manager:
                result = manager.health_check()
        finally:
            admin.acl_deluser(name)
    assert result.ok
    assert result.server_version is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cr%40t@cache.example:6380/2", "redis://:***@cache.example:6380/2"),
        ("redis://app:s3cr%40t@cache.example/0", "redis://app:***@cache.example/0"),
        # a user part alone: redis-py sends it as the username, but many put the password there
        ("redis://s3cr%40t@cache.example:6380/2", "redis://***@cache.example:6380/2"),
        ("unix://s3cr%40t@/run/redis.sock?db=1", "unix://***@/run/redis.sock?db=1"),
        ("rediss://cache.example/0?password=s3cr%40t", "rediss://cache.example/0?password=***"),
        # redis-py hands any query option to the connection: the key file's passphrase too
        (
            "rediss://cache.example/0?ssl_certfile=/c.pem&ssl_password=s3cr%40t",
            "rediss://cache.example/0?ssl_certfile=/c.pem&ssl_password=***",
        ),
        # an option of an innocent name whose value is a URL with its own password
        (
            "redis://cache.example/0?sentinel_url=redis%3A%2F%2F%3As3cr%40t%40sentinel",
            "redis://cache.example/0?sentinel_url=redis://:***@sentinel",
        ),
        (
            "redis://cache.example/0?sentinel_url=redis%3A%2F%2Fs3cr%40t%40sentinel",
            "redis://cache.example/0?sentinel_url=redis://***@sentinel",
        ),
    ],
)
def test_repr_and_str_mask_the_password_wherever_the_url_carries_it(url: str, shown: str) -> None:
    config = RedisConfig(url)
    assert config.safe_url == shown
    for text in (repr(config), str(config), repr(RedisManager(config))):
        assert "s3cr" not in text
    assert config.scrub("AUTH failed for s3cr@t and s3cr%40t") == "AUTH failed for *** and ***"


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cret@cache.example/0",
        "redis://:s3cret@cache.example:notaport/0",
        "redis://:s3cret@cache.example/0?socket_timeout=soon",
        "redis://:s3cret@cache.example/abc",
        "rediss://:s3cret@cache.example:6380/0/1",
    ],
)
def test_a_bad_url_raises_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisManager(url)
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_database_path_that_is_no_number_is_refused_not_db_0() -> None:
    # redis-py ignores such a path: the data went to database 0, silently
    with pytest.raises(ConfigurationError, match="database number"):
        RedisConfig.from_env({"DALKIT_REDIS_URL": "redis://127.0.0.1:6379/abc"})
    assert RedisConfig("redis://127.0.0.1:6379/12/").database == "12"
    assert RedisConfig("unix:///run/redis.sock?db=3").database == "3"


def test_unknown_options_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown Redis option"):
        RedisManager("redis://localhost/0", pool_size=3)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("socket_timeout_s", "5", "must be a number"),  # a raw TypeError
        ("max_connections", True, "must be an integer"),  # a pool of one
        ("decode_responses", "no", "must be a bool"),  # decoding on
        ("health_check_interval_s", -1, r"zero \(off\) or positive"),
        # a raw ValueError or OverflowError at the first command
        ("socket_timeout_s", float("nan"), "finite"),
        ("socket_connect_timeout_s", float("inf"), "finite"),
        ("socket_timeout_s", 1e12, "a day at the most"),
    ],
)
def test_an_option_of_the_wrong_type_or_range_raises_configuration_error(
    option: str, value: object, expected: str
) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigurationError, match=expected) as caught:
        RedisConfig("redis://localhost/0", **options)
    assert option in str(caught.value)


@pytest.mark.parametrize(
    ("option", "raw", "parsed"),
    [
        ("max_connections", "3", 3),
        ("socket_timeout_s", "none", None),
        ("socket_connect_timeout_s", "0.5", 0.5),
        ("decode_responses", "yes", True),
        ("client_name", "worker", "worker"),
    ],
)
def test_from_env_reads_each_option(option: str, raw: str, parsed: object) -> None:
    variable = f"DALKIT_REDIS_{option.upper()}"
    config = RedisConfig.from_env({"DALKIT_REDIS_URL": "redis://cache.example/1", variable: raw})
    assert getattr(config, option) == parsed
    assert config.url == "redis://cache.example/1"


def test_from_env_names_a_misspelt_variable_and_a_value_that_does_not_parse() -> None:
    with pytest.raises(ConfigurationError, match="did you mean DALKIT_REDIS_MAX_CONNECTIONS"):
        RedisConfig.from_env({"DALKIT_REDIS_MAXCONNECTIONS": "3"})
    with pytest.raises(ConfigurationError, match=r"DALKIT_REDIS_MAX_CONNECTIONS .* 'lots'"):
        RedisConfig.from_env({"DALKIT_REDIS_MAX_CONNECTIONS": "lots"})


def test_a_missing_redis_py_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec_without_redis(name: str, package: str | None = None) -> object:
        return None if name == "redis" else real_find_spec(name, package)

    # simulates an install without the redis extra; no server is contacted
    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_redis)
    with pytest.raises(ConfigurationError, match=r"pip install 'dalkit\[redis\]'"):
        AsyncRedisManager("redis://localhost/0")


def test_importing_dalkit_does_not_import_redis() -> None:
    script = (
        "import sys, dalkit\n"
        "assert 'redis' not in sys.modules, 'import dalkit imported redis'\n"
        "dalkit.RedisManager\n"
        "assert 'redis' not in sys.modules, 'naming RedisManager imported redis'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_the_managers_are_exported_from_the_package() -> None:
    assert {"RedisManager", "AsyncRedisManager"} <= set(dalkit.__all__)
    assert dalkit.RedisManager is RedisManager
    assert dalkit.AsyncRedisManager is AsyncRedisManager
