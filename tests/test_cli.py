"""The ``dalkit`` command line: doctor and demo on SQLite and PostgreSQL, and without the extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from dalkit.cli import app, main
from dalkit.cli.demo import SECTIONS

WRONG_PASSWORD = "Wr0ng-Pa55word"


@pytest.fixture(autouse=True)
def _no_urls_from_the_outer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DALKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DALKIT_REDIS_URL", raising=False)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def doctor_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = invoke("doctor", "--json", *args, env=env)
    return result.exit_code, json.loads(result.stdout)


# --- doctor ---------------------------------------------------------------------------


def test_doctor_on_sqlite_reports_health_pool_settings_and_stats(sqlite_url: str) -> None:
    code, report = doctor_json("--url", sqlite_url)
    assert code == 0
    assert report["ok"] is True
    database = report["database"]
    assert database["ok"] is True
    assert database["backend"] == "sqlite"
    assert database["server_version"]
    assert database["pool"]["pool_size"] == 5
    assert database["pool"]["pool_pre_ping"] is True
    assert database["pool_stats"]["connections_num"] == 1
    assert report["redis"] is None


def test_doctor_prints_a_table_by_default(sqlite_url: str) -> None:
    result = invoke("doctor", "--url", sqlite_url)
    assert result.exit_code == 0
    for expected in ("dalkit doctor", "pool_pre_ping", "connections_num", "every check passed"):
        assert expected in result.stdout


def test_doctor_reads_the_url_and_pool_options_from_the_environment(sqlite_url: str) -> None:
    env = {"DALKIT_DATABASE_URL": sqlite_url, "DALKIT_DATABASE_POOL_SIZE": "3"}
    code, report = doctor_json(env=env)
    assert code == 0
    assert report["database"]["url"] == sqlite_url
    assert report["database"]["pool"]["pool_size"] == 3


def test_doctor_url_option_keeps_the_pool_options_of_the_environment(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {
        "DALKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}",
        "DALKIT_DATABASE_POOL_SIZE": "2",
    }
    code, report = doctor_json("--url", sqlite_url, env=env)
    assert code == 0
    assert report["database"]["url"] == sqlite_url
    assert report["database"]["pool"]["pool_size"] == 2


@pytest.mark.postgres
def test_doctor_on_postgres_reports_the_server_and_hides_the_password(postgres_url: str) -> None:
    password = make_url(postgres_url).password
    assert password
    result = invoke("doctor", "--url", postgres_url, "--json")
    assert result.exit_code == 0
    database = json.loads(result.stdout)["database"]
    assert database["backend"] == "postgresql"
    assert database["server_version"].split(".")[0].isdigit()
    assert database["database"] == "postgres"
    assert password not in result.output


@pytest.mark.postgres
@pytest.mark.parametrize("output", ["table", "json"])
def test_doctor_with_a_wrong_password_fails_without_showing_it(
    postgres_url: str, output: str
) -> None:
    wrong = make_url(postgres_url).set(password=WRONG_PASSWORD)
    args = ["doctor", "--url", wrong.render_as_string(hide_password=False)]
    result = invoke(*args, *(["--json"] if output == "json" else []))
    assert result.exit_code == 1
    assert "ConnectionFailedError" in result.output
    assert WRONG_PASSWORD not in result.output


def test_doctor_checks_redis_when_given_a_url(sqlite_url: str, redis_url: str) -> None:
    code, report = doctor_json("--url", sqlite_url, "--redis-url", redis_url)
    assert code == 0
    redis = report["redis"]
    assert redis["ok"] is True
    assert redis["server_version"]
    assert redis["pool"]["max_connections"] == 50


def test_doctor_reads_the_redis_url_from_the_environment(sqlite_url: str, redis_url: str) -> None:
    code, report = doctor_json("--url", sqlite_url, env={"DALKIT_REDIS_URL": redis_url})
    assert code == 0
    assert report["redis"]["url"] == redis_url


def test_doctor_fails_for_an_unreachable_redis_without_showing_its_password(
    sqlite_url: str,
) -> None:
    result = invoke("doctor", "--url", sqlite_url, "--redis-url", "redis://:s3cret@127.0.0.1:1/0")
    assert result.exit_code == 1
    assert "ConnectionError" in result.output
    assert "redis://:***@127.0.0.1:1/0" in result.output
    assert "s3cret" not in result.output


def test_doctor_exits_2_for_a_malformed_url_without_showing_it() -> None:
    result = invoke("doctor", "--url", "postgresql://app:s3cret@db:not-a-port/app")
    assert result.exit_code == 2
    assert "malformed database URL" in result.stderr
    assert "s3cret" not in result.output


# --- demo -----------------------------------------------------------------------------


def test_demo_runs_every_section_on_a_temporary_sqlite_file() -> None:
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    for section in SECTIONS:
        assert section.title in result.stdout
    assert "UniqueViolationError" in result.stdout
    assert "ForeignKeyViolationError" in result.stdout
    assert "Tour complete" in result.stdout


@pytest.mark.postgres
def test_demo_runs_on_postgres_and_can_run_again(postgres_database_url: str) -> None:
    password = make_url(postgres_database_url).password
    assert password
    for _ in range(2):
        result = invoke("demo", "--url", postgres_database_url)
        assert result.exit_code == 0, result.output
        assert "uq_demo_users_email" in result.stdout
        assert "23505" in result.stdout
        assert "Tour complete" in result.stdout
        assert password not in result.output


def test_demo_stops_with_exit_1_when_the_database_is_unreachable() -> None:
    result = invoke("demo", "--url", "postgresql://app:s3cret@127.0.0.1:1/app")
    assert result.exit_code == 1
    assert "ConnectionFailedError" in result.stderr
    assert "s3cret" not in result.output


# --- the console script ---------------------------------------------------------------


def test_main_runs_the_app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["dalkit", "doctor", "--url", sqlite_url, "--json"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0


def test_main_without_the_cli_extra_names_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes the module unfindable, as if typer were not installed
    monkeypatch.setitem(sys.modules, "typer", None)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert "pip install 'dalkit[cli]'" in stderr
