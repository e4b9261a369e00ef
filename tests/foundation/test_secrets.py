"""Secrets never shown: passwords in the query string, in connect_args, with an unencoded ``@``,
and the secret key, in every place a URL or a config is rendered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from dalkit import AsyncDatabase, ConfigurationError, Database, DatabaseConfig
from dalkit.cli import app

SECRET = "S3cr3t-Pa55"
AT_SECRET = "p@ss@w0rd"
KEY = "cursor-signing-K3y-0123456789"

# (URL, options): each hides a secret in a different place; nothing listens on port 1
LEAKY_INPUTS = {
    "query password": (f"postgresql://app@127.0.0.1:1/app?password={SECRET}", {}),
    "query sslpassword": (f"postgresql://app@127.0.0.1:1/app?sslpassword={SECRET}", {}),
    "connect_args password": ("postgresql://app@127.0.0.1:1/app", {"password": SECRET}),
    "connect_args sslpassword": ("postgresql://app@127.0.0.1:1/app", {"sslpassword": SECRET}),
}


# a secret inside a value whose own name is innocent: a URL's password, a libpq DSN's
INNOCENT_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "a DSN in connect_args": (
        "postgresql://app@127.0.0.1:1/app",
        {"connect_args": {"conninfo": f"host=127.0.0.1 port=1 password={SECRET}"}},
    ),
    "a URL in an option": (
        "postgresql://app@127.0.0.1:1/app",
        {"application_name": f"postgresql://app:{SECRET}@replica/app"},
    ),
    "a URL in the query": (
        f"postgresql://app@127.0.0.1:1/app?application_name=redis%3A%2F%2F%3A{SECRET}%40cache",
        {},
    ),
    "a nested server setting": (
        "postgresql+asyncpg://app@127.0.0.1:1/app",
        {"connect_args": {"server_settings": {"app.upstream": f"host=h password='{SECRET}'"}}},
    ),
}


@pytest.mark.parametrize("case", sorted(INNOCENT_NAMES))
def test_a_secret_inside_a_value_of_an_innocent_name_is_masked(case: str) -> None:
    url, options = INNOCENT_NAMES[case]
    config = DatabaseConfig.coerce(url, **options)
    shown = [repr(config), str(config), config.safe_url]
    if config.url.get_backend_name() == "postgresql" and "asyncpg" not in url:
        with Database(config) as db:
            shown += [repr(db), str(db), db.url]
    for text in shown:
        assert SECRET not in text, text
    assert "***" in repr(config)
    assert config.scrub(f"the driver said {SECRET}") == "the driver said ***"
    # what reaches the driver is the value as given
    given = {**config.connect_args, "url": config.url, "name": config.application_name}
    assert SECRET in str(given)


def _options(connect_args: dict[str, str]) -> dict[str, Any]:
    return {"connect_args": connect_args, "connect_timeout_s": 1} if connect_args else {}


@pytest.mark.parametrize("case", sorted(LEAKY_INPUTS))
def test_a_secret_outside_the_userinfo_is_masked_in_every_rendering(case: str) -> None:
    url, connect_args = LEAKY_INPUTS[case]
    with Database(url, **_options(connect_args)) as db:
        health = db.health_check()
        shown = [repr(db), str(db), db.url, str(db.config), repr(db.config), str(db.engine.url)]
        shown += [health.url, repr(health)]
    for text in shown:
        assert SECRET not in text, text
    assert not health.ok


@pytest.mark.parametrize("case", sorted(LEAKY_INPUTS))
async def test_the_async_database_masks_the_same_secrets(case: str) -> None:
    url, connect_args = LEAKY_INPUTS[case]
    if "sslpassword" in case:  # asyncpg has no such argument: refused, and not shown either
        with pytest.raises(ConfigurationError, match="'sslpassword'") as caught:
            AsyncDatabase(url, **_options(connect_args))
        assert SECRET not in str(caught.value)
        return
    async with AsyncDatabase(url, **_options(connect_args)) as db:
        health = await db.health_check()
        shown = [repr(db), db.url, str(db.config), str(db.engine.url), health.url, repr(health)]
    for text in shown:
        assert SECRET not in text, text


def test_a_query_password_still_reaches_the_driver() -> None:
    config = DatabaseConfig.from_url(f"postgresql://app@db/app?password={SECRET}&sslmode=prefer")
    # moved out of the rendered URL into connect_args, which the dialect merges in the same way
    assert config.connect_args["password"] == SECRET
    assert "password" not in config.url.query
    assert config.url.query["sslmode"] == "prefer"


def test_a_password_with_an_unencoded_at_sign_is_read_whole_and_masked() -> None:
    config = DatabaseConfig.from_url(f"postgresql://app:{AT_SECRET}@db.example:5432/app")
    assert config.url.password == AT_SECRET
    assert config.url.host == "db.example"
    assert config.safe_url == "postgresql://app:***@db.example:5432/app"
    with Database(config) as db:
        for text in (repr(db), db.url, str(db.config), str(db.engine.url)):
            assert "p@ss" not in text
            assert "w0rd" not in text


@pytest.mark.postgres
def test_a_password_with_an_at_sign_connects(postgres_url: str) -> None:
    import psycopg

    server = make_url(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS at_user")
        admin.execute(f"CREATE ROLE at_user LOGIN PASSWORD '{AT_SECRET}'")
    try:
        raw = f"postgresql://at_user:{AT_SECRET}@{server.host}:{server.port}/postgres"
        with Database(raw) as db:
            health = db.health_check()
        assert health.ok, health.error
        assert AT_SECRET not in repr(health)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("DROP ROLE at_user")


@pytest.mark.postgres
def test_a_wrong_password_in_connect_args_is_scrubbed_from_the_error(
    postgres_database_url: str,
) -> None:
    url = make_url(postgres_database_url).set(password=None)
    with Database(url, connect_args={"password": SECRET}) as db:
        health = db.health_check()
    assert not health.ok
    assert "password authentication failed" in (health.error or "")
    assert SECRET not in repr(health)


@pytest.mark.postgres
async def test_a_secret_server_setting_in_the_options_is_masked_and_still_set(
    postgres_database_url: str,
) -> None:
    # libpq's options carry server settings; one named like a secret was shown in every URL
    url = make_url(postgres_database_url).update_query_dict(
        {"options": f"-c app.api_key={SECRET} -c app.region=eu"}
    )
    raw = url.render_as_string(hide_password=False)
    with Database(raw) as db:
        shown = [repr(db), str(db), db.url, str(db.config), db.health_check().url]
        shown += [str(db.engine.url), repr(db.engine.url), repr(db.engine)]  # SQLAlchemy's
        assert db.sql("SELECT current_setting('app.api_key') AS k")[0]["k"] == SECRET
    # psycopg's, with dalkit's own setting added to the URL's: both still reach the server
    with Database(raw, statement_timeout_ms=4321) as db:
        shown += [str(db.engine.url), repr(db.engine)]
        rows = db.sql(
            "SELECT current_setting('app.api_key') AS k, current_setting('app.region') AS r, "
            "current_setting('statement_timeout') AS t"
        )
        assert (rows[0]["k"], rows[0]["r"], rows[0]["t"]) == (SECRET, "eu", "4321ms")
    async with AsyncDatabase(raw.replace("postgresql:", "postgresql+psycopg:", 1)) as adb:
        shown += [str(adb.engine.url), repr(adb.engine.sync_engine)]
        rows = await adb.sql("SELECT current_setting('app.api_key') AS k")
        assert rows[0]["k"] == SECRET
    async with AsyncDatabase(raw) as adb:
        shown += [repr(adb), adb.url, (await adb.health_check()).url, str(adb.engine.url)]
        rows = await adb.sql("SELECT current_setting('app.api_key') AS k")
        assert rows[0]["k"] == SECRET
    for text in shown:
        assert SECRET not in text, text
    assert "options=-c+app.api_key%3D***+-c+app.region%3Deu" in shown[2]  # the others show


@pytest.mark.postgres
@pytest.mark.parametrize(
    "options",
    [f"-c%20app.upstream%3Dpassword%3D{SECRET}", f"-c app.upstream=password={SECRET}"],
)
async def test_a_secret_inside_an_innocent_server_settings_value_is_masked_and_still_set(
    postgres_database_url: str, options: str
) -> None:
    # the setting app.upstream names no secret, so its value (password=...) was shown whole
    raw = f"{postgres_database_url}?options={options}"
    config = DatabaseConfig.coerce(raw)
    shown = [repr(config), config.safe_url, config.scrub(f"the server said {SECRET}")]
    with Database(raw) as db:
        shown += [repr(db), str(db), db.url, db.health_check().url]
        shown += [str(db.engine.url), repr(db.engine.url), repr(db.engine)]  # SQLAlchemy's
        rows = db.sql("SELECT current_setting('app.upstream') AS u")
        assert rows[0]["u"] == f"password={SECRET}"
    async with AsyncDatabase(raw) as adb:
        shown += [repr(adb), adb.url, str(adb.engine.url), repr(adb.engine.sync_engine)]
        rows = await adb.sql("SELECT current_setting('app.upstream') AS u")
        assert rows[0]["u"] == f"password={SECRET}"
    doctor = CliRunner().invoke(app, ["doctor", "--url", raw], env={"COLUMNS": "300"})
    assert doctor.exit_code == 0, doctor.output
    shown.append(doctor.output)
    for text in shown:
        assert SECRET not in text, text
    assert "options=-c+app.upstream%3Dpassword%3D***" in shown[1]


@pytest.mark.parametrize(
    "connect_args",
    [
        {"server_settings": {"app.api_key": SECRET, "search_path": "app"}},  # asyncpg's
        {"options": f"-c app.api_key={SECRET} -c search_path=app"},  # libpq's
        # an innocent setting whose value holds a secret of its own
        {"options": f"-c app.upstream=password={SECRET} -c search_path=app"},
    ],
)
def test_a_secret_server_setting_in_connect_args_is_masked_in_the_config(
    connect_args: dict[str, Any],
) -> None:
    config = DatabaseConfig.from_url("postgresql://app@db/app", connect_args=connect_args)
    assert SECRET not in repr(config)
    assert "search_path" in repr(config)
    assert config.scrub(f"invalid value {SECRET!r}") == "invalid value '***'"


def test_the_secret_key_is_configurable_and_never_shown() -> None:
    config = DatabaseConfig.from_url("sqlite:///x.db", secret_key=KEY)
    assert config.secret_key == KEY
    assert KEY not in repr(config)
    assert "secret_key='***'" in repr(config)
    assert config.scrub(f"signed with {KEY}") == "signed with ***"


def test_the_secret_key_comes_from_dalkit_secret_key() -> None:
    env = {"DALKIT_DATABASE_URL": "sqlite:///x.db", "DALKIT_SECRET_KEY": KEY}
    assert DatabaseConfig.from_env(env).secret_key == KEY


@pytest.mark.parametrize("key", ["", "short-key"])
def test_a_short_secret_key_is_refused_without_showing_it(key: str) -> None:
    from dalkit import ConfigurationError

    with pytest.raises(ConfigurationError, match="at least 16 bytes") as caught:
        DatabaseConfig.from_url("sqlite:///x.db", secret_key=key)
    assert "short-key" not in str(caught.value)


@pytest.mark.parametrize("case", sorted(LEAKY_INPUTS)[:2])
def test_doctor_json_masks_a_query_password(case: str) -> None:
    url, _ = LEAKY_INPUTS[case]
    result = CliRunner().invoke(app, ["doctor", "--json", "--url", url])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["database"]["ok"] is False
    assert SECRET not in result.output


def test_doctor_masks_a_password_with_an_at_sign() -> None:
    url = f"postgresql://app:{AT_SECRET}@127.0.0.1:1/app"
    result = CliRunner().invoke(app, ["doctor", "--json", "--url", url])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["database"]["url"] == "postgresql://app:***@127.0.0.1:1/app"
    assert "p@ss" not in result.output
    assert "w0rd" not in result.output
