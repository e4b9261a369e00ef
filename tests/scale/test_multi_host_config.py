"""A multi-host URL (``h1:5432,h2:5432``) from every way in: ``Database(url)``, a
``DatabaseConfig``, ``Database.from_env()``, ``dalkit doctor`` and a replica's URL; a malformed
replica URL is a ConfigurationError that does not show the password."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from dalkit import Database, DatabaseConfig
from dalkit.cli import app
from dalkit.errors import ConfigurationError
from dalkit.testing._server import free_port


def _multi_host(url: str, first_port: int) -> str:
    """``url`` with a host nobody listens on before its own: libpq moves on to the next one."""
    parsed = make_url(url)
    password = url.split("@")[0].rsplit(":", 1)[1]
    return (
        f"postgresql+psycopg://{parsed.username}:{password}@127.0.0.1:{first_port},"
        f"{parsed.host}:{parsed.port}/{parsed.database}?target_session_attrs=read-write"
    )


def test_a_multi_host_url_works_from_a_config_and_the_environment(
    replicated_database: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, _ = replicated_database
    password = make_url(primary).password
    assert password
    url = _multi_host(primary, free_port())
    monkeypatch.setenv("DALKIT_DATABASE_URL", url)
    for db in (Database(url), Database(DatabaseConfig.from_url(url)), Database.from_env()):
        with db:
            assert db.sql("SELECT 1 AS one") == [{"one": 1}]
            assert password not in db.url


def test_doctor_takes_a_multi_host_url_for_the_primary_and_a_replica(
    replicated_database: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, replica = replicated_database
    password = make_url(primary).password
    assert password
    monkeypatch.delenv("DALKIT_REPLICA_URLS", raising=False)
    env = {"DALKIT_DATABASE_URL": _multi_host(primary, free_port())}
    dead = free_port()
    replica_url = _multi_host(replica, dead).replace("read-write", "standby")
    result = CliRunner().invoke(app, ["doctor", "--replica", replica_url, "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert password not in result.output
    (row,) = json.loads(result.stdout)["replicas"]
    assert row["name"] == f"127.0.0.1:{dead},127.0.0.1:{make_url(replica).port}"
    assert row["state"] == "healthy"


@pytest.mark.parametrize(
    "replica", ["postgresql://app:s3cret@h1:port/app", "not a URL, with s3cret in it"]
)
def test_a_malformed_replica_url_is_a_configuration_error(replica: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Database("postgresql+psycopg://app:s3cret@127.0.0.1:1/app", replicas=[replica])
    assert "s3cret" not in str(raised.value)


def test_a_replica_url_may_carry_its_password_in_the_query(
    replicated_database: tuple[str, str],
) -> None:
    primary, replica = replicated_database
    parsed = make_url(replica)
    password = parsed.password
    assert password
    in_query = parsed.set(password=None).update_query_dict({"password": password})
    url = primary.replace("postgresql://", "postgresql+psycopg://")
    with Database(url, replicas=[in_query.render_as_string(hide_password=False)]) as db:
        with db.transaction(read_only=True) as session:
            assert session.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
        assert password not in repr(db.get_stats())
