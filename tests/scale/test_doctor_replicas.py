"""``dalkit doctor`` with a real streaming replica: one row per replica, named host:port, with
its state and lag, in the table and in ``--json``; the password shows nowhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from dalkit.cli import app
from dalkit.testing.replication import Replication


@pytest.fixture(autouse=True)
def _no_urls_from_the_outer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DALKIT_DATABASE_URL", "DALKIT_REDIS_URL", "DALKIT_REPLICA_URLS"):
        monkeypatch.delenv(name, raising=False)


def _doctor(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["doctor", *args], env=env)


def _name(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port}"


def test_doctor_shows_each_replica_by_host_and_port_with_its_state_and_lag(
    replicated_database: tuple[str, str],
) -> None:
    primary, replica = replicated_database
    password = make_url(replica).password
    assert password
    result = _doctor("--url", primary, "--replica", replica, "--json")
    assert result.exit_code == 0, result.output
    assert password not in result.output
    report: dict[str, Any] = json.loads(result.stdout)
    (row,) = report["replicas"]
    assert row["name"] == _name(replica)
    assert row["state"] == "healthy"
    assert row["lag_s"] is not None
    assert row["lag_s"] < 5
    assert (row["reads"], row["errors"], row["error"]) == (0, 0, None)

    table = _doctor("--url", primary, env={"DALKIT_REPLICA_URLS": f" {replica} ,"})
    assert table.exit_code == 0, table.output
    assert _name(replica) in table.output
    assert "healthy" in table.output
    assert password not in table.output


def test_doctor_fails_for_a_replica_that_is_down_or_not_a_replica(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    primary, replica = replicated_database
    password = make_url(replica).password
    assert password
    as_replica = _doctor("--url", primary, "--replica", primary, "--json")
    assert as_replica.exit_code == 1
    assert json.loads(as_replica.stdout)["replicas"][0]["state"] == "not in recovery"

    replication.replica.shutdown()  # the fixture starts it again
    down = _doctor("--url", primary, "--replica", replica, "--json")
    assert down.exit_code == 1
    assert password not in down.output
    row = json.loads(down.stdout)["replicas"][0]
    assert (row["state"], row["lag_s"], row["errors"]) == ("down", None, 1)
    assert row["error"]
    table = _doctor("--url", primary, "--replica", replica)
    assert table.exit_code == 1
    assert "down" in table.output
    assert password not in table.output


def test_doctor_refuses_replicas_of_sqlite(tmp_path: Any) -> None:
    path = tmp_path / "app.db"
    path.touch()
    result = _doctor("--url", f"sqlite:///{path}", "--replica", f"sqlite:///{path}")
    assert result.exit_code == 2
    assert "PostgreSQL" in result.output


def test_a_replica_weighted_0_is_reported_as_drained_whatever_its_probe_finds(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    # before, doctor took no weights: a replica the app drains showed as healthy, or failed
    primary, replica = replicated_database
    password = make_url(replica).password
    assert password
    # the primary given as a second replica, drained: "not in recovery" would fail it otherwise
    both = _doctor(
        "--url", primary, "--replica", replica, "--replica", primary,
        "--replica-weight", "1", "--replica-weight", "0", "--json",
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    weighted, drained = json.loads(both.stdout)["replicas"]
    assert (weighted["state"], weighted["probed"], weighted["weight"]) == ("healthy", "healthy", 1)
    assert (drained["state"], drained["probed"], drained["weight"]) == (
        "drained",
        "not in recovery",
        0,
    )

    replication.replica.shutdown()  # down for maintenance; the fixture starts it again
    env = {"DALKIT_REPLICA_URLS": replica, "DALKIT_REPLICA_WEIGHTS": "0"}
    down = _doctor("--url", primary, "--json", env=env)
    assert down.exit_code == 0, down.output
    row = json.loads(down.stdout)["replicas"][0]
    assert (row["state"], row["probed"], row["weight"], row["lag_s"]) == (
        "drained",
        "down",
        0,
        None,
    )
    assert row["error"]
    table = _doctor("--url", primary, env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "drained (weight 0, no reads), probe: down" in table.output
    assert "FAILED" not in table.output
    assert password not in down.output + table.output


@pytest.mark.parametrize(
    ("args", "weights", "expected"),
    [
        (("--replica-weight", "0", "--replica-weight", "1"), None, "2 replica weight(s) for 1"),
        ((), "1,1", "2 replica weight(s) for 1"),
        ((), "-1", "DALKIT_REPLICA_WEIGHTS takes integers >= 0"),
        ((), "half", "DALKIT_REPLICA_WEIGHTS takes integers >= 0"),
    ],
)
def test_replica_weights_that_do_not_fit_the_replicas_are_bad_configuration(
    args: tuple[str, ...], weights: str | None, expected: str
) -> None:
    # refused before any connection: nothing listens on port 1
    env = {"DALKIT_REPLICA_WEIGHTS": weights} if weights else {}
    result = _doctor(
        "--url", "postgresql://app:S3cret@127.0.0.1:1/app",
        "--replica", "postgresql://app:S3cret@127.0.0.1:2/app", *args, env=env,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "S3cret" not in result.output
