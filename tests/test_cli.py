"""The ``dalkit`` command line: doctor and demo on SQLite and PostgreSQL, and without the extra."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from dalkit.cli import app, main
from dalkit.cli.demo import SECTIONS

WRONG_PASSWORD = "Wr0ng-Pa55word"
#: a project module whose ``make`` returns a publisher
PUBLISHER = (
    "class Printer:\n    def publish(self, message):\n        print(message)\n\n\nmake = Printer\n"
)


@pytest.fixture(autouse=True)
def _no_urls_from_the_outer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DALKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DALKIT_REDIS_URL", raising=False)


@pytest.fixture
def sqlite_url(sqlite_url: str) -> str:
    """The plugin's SQLite URL, its file created: the commands open only files that exist."""
    database = make_url(sqlite_url).database
    assert database
    sqlite3.connect(database).close()
    return sqlite_url


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


def test_doctor_masks_a_redis_password_written_as_the_user_part(
    sqlite_url: str, redis_url: str
) -> None:
    # redis://s3cret@host: redis-py sends it as the username; it was shown as it is
    parts = make_url(redis_url)
    url = f"redis://s3cret-Pw@{parts.host}:{parts.port}/0"
    for args in (("--json",), ()):
        result = invoke("doctor", *args, "--url", sqlite_url, "--redis-url", url)
        assert f"redis://***@{parts.host}:{parts.port}/0" in result.output
        assert "s3cret-Pw" not in result.output


def test_doctor_exits_2_for_a_malformed_url_without_showing_it() -> None:
    result = invoke("doctor", "--url", "postgresql://app:s3cret@db:not-a-port/app")
    assert result.exit_code == 2
    assert "malformed database URL" in result.stderr
    assert "s3cret" not in result.output


def test_doctor_without_a_url_exits_2_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("doctor")
    assert result.exit_code == 2
    assert "DALKIT_DATABASE_URL is not set" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_doctor_names_a_misspelt_environment_variable_and_exits_2(sqlite_url: str) -> None:
    env = {"DALKIT_DATABASE_URL": sqlite_url, "DALKIT_DATABASE_POOL_SIZ": "3"}
    result = invoke("doctor", env=env)
    assert result.exit_code == 2
    assert "did you mean DALKIT_DATABASE_POOL_SIZE?" in result.stderr


@pytest.mark.parametrize("output", ["table", "json"])
def test_doctor_on_a_missing_sqlite_file_fails_and_creates_nothing(
    tmp_path: Path, output: str
) -> None:
    missing = tmp_path / "missing.db"
    result = invoke("doctor", "--url", f"sqlite:///{missing}", *(["--json"] * (output == "json")))
    assert result.exit_code == 1
    assert "no SQLite database file" in result.output
    assert list(tmp_path.iterdir()) == []


def test_doctor_shows_no_pool_tables_after_a_failed_connection(tmp_path: Path) -> None:
    result = invoke("doctor", "--url", "postgresql://app@127.0.0.1:1/app")
    assert result.exit_code == 1
    assert "ConnectionFailedError" in result.stdout
    for absent in ("pool stats", "pool_size", "connections_num"):
        assert absent not in result.stdout
    code, report = doctor_json("--url", "postgresql://app@127.0.0.1:1/app")
    assert code == 1
    assert report["database"]["pool"] is None
    assert report["database"]["pool_stats"] is None


def test_doctor_shows_the_pool_upkeep_settings(sqlite_url: str) -> None:
    env = {"DALKIT_DATABASE_URL": sqlite_url, "DALKIT_DATABASE_MIN_SIZE": "2"}
    code, report = doctor_json(env=env)
    assert code == 0
    assert report["database"]["pool"]["min_size"] == 2
    assert report["database"]["url"] == sqlite_url


def _commands(command: Any, path: list[str]) -> Iterator[list[str]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield path
    for name, sub in (subcommands or {}).items():
        yield from _commands(sub, [*path, name])


def test_flags_are_shown_without_a_value_type_in_the_help() -> None:
    # Typer 0.29 shows a flag as "--sql <bool>", as if it took a value; before, every flag but
    # doctor's --json and outbox relay's --once did (Typer's own --help still does: no knob)
    for path in _commands(typer.main.get_command(app), []):
        result = invoke(*path, "--help", env={"COLUMNS": "200"})
        assert result.exit_code == 0, path
        shown = [line for line in result.stdout.splitlines() if "<bool>" in line]
        assert all("--help" in line for line in shown), (path, shown)


def test_each_command_summary_is_one_paragraph_without_line_breaks() -> None:
    # Typer lists a command by the first paragraph of its docstring, keeping its line breaks:
    # before, "dalkit --help" broke doctor's line after "pool settings and" whatever the width
    def summaries(command: Any, path: str) -> dict[str, str]:
        found = {path: (command.help or "").split("\n\n")[0]}
        for name, sub in getattr(command, "commands", {}).items():
            found.update(summaries(sub, f"{path} {name}"))
        return found

    broken = {
        path: text
        for path, text in summaries(typer.main.get_command(app), "dalkit").items()
        if "\n" in text
    }
    assert broken == {}


# --- outbox ---------------------------------------------------------------------------


def test_outbox_status_without_dalkits_tables_says_what_to_run(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite3.connect(path).close()
    result = invoke("outbox", "status", "--url", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert "no such table" not in result.output
    assert "no dalkit_outbox table" in result.stderr
    assert "dalkit migrate up" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        connection.close()


@pytest.mark.postgres
def test_outbox_status_on_postgres_without_dalkits_tables_says_what_to_run(
    postgres_database_url: str,
) -> None:
    result = invoke("outbox", "status", "--url", postgres_database_url)
    assert result.exit_code == 1
    assert "no dalkit_outbox table" in result.stderr
    assert "UndefinedTable" not in result.output
    password = make_url(postgres_database_url).password
    assert password
    assert password not in result.output


def test_outbox_relay_without_dalkits_tables_says_what_to_run(
    sqlite_url: str, project_module: Callable[[str], str]
) -> None:
    name = project_module(PUBLISHER)
    result = invoke("outbox", "relay", "--once", "--url", sqlite_url, "--publisher", f"{name}:make")
    assert result.exit_code == 1
    assert "no dalkit_outbox table" in result.stderr


def test_outbox_relay_loads_a_publisher_of_the_project_in_the_current_directory(
    sqlite_url: str, project_module: Callable[[str], str]
) -> None:
    name = project_module(PUBLISHER)
    result = invoke("outbox", "relay", "--once", "--url", sqlite_url, "--publisher", f"{name}:make")
    assert result.exit_code == 1, result.output  # loaded: on to the missing table
    assert "no dalkit_outbox table" in result.stderr


@pytest.mark.parametrize("spec", [":make", "nosuchmodule_x:make", "builtins"])
def test_outbox_relay_with_a_bad_publisher_exits_2(sqlite_url: str, spec: str) -> None:
    result = invoke("outbox", "relay", "--once", "--url", sqlite_url, "--publisher", spec)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert "--publisher" in result.stderr


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("make = 42\n", "not callable"),
        ("def make(url):\n    return url\n", "calling it raised TypeError"),
        ("def make():\n    return {}\n", "no publish() method"),
        (
            "class Async:\n    async def publish(self, message):\n        pass\n\nmake = Async\n",
            "async publisher",
        ),
        ("from dalkit import EventBus\n\nmake = EventBus\n", "EventBusPublisher(bus)"),
    ],
)
def test_outbox_relay_refuses_a_publisher_factory_that_makes_no_publisher(
    sqlite_url: str, project_module: Callable[[str], str], source: str, said: str
) -> None:
    # before: a traceback, or a relay that failed every message, or (async publish) one that
    # marked every message sent without awaiting its delivery
    name = project_module(source)
    result = invoke("outbox", "relay", "--once", "--url", sqlite_url, "--publisher", f"{name}:make")
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert said in result.stderr


@pytest.mark.parametrize("command", [["status"], ["relay", "--once", "--publisher"]])
@pytest.mark.parametrize(
    "url", ["mysql://app:s3cret@127.0.0.1/app", "postgresql+nosuchdriver://app:s3cret@h/app"]
)
def test_outbox_on_a_database_dalkit_does_not_support_exits_2(
    command: list[str], url: str, project_module: Callable[[str], str]
) -> None:
    # as doctor, inspect, migrate and demo do: the configuration is unusable, nothing was tried
    if command[-1] == "--publisher":
        command = [*command, f"{project_module(PUBLISHER)}:make"]
    result = invoke("outbox", *command, "--url", url)
    assert result.exit_code == 2, result.output
    assert "s3cret" not in result.output


def test_outbox_status_on_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    result = invoke("outbox", "status", "--url", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 1
    assert "no SQLite database file" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_outbox_status_without_a_url_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("outbox", "status")
    assert result.exit_code == 2
    assert "DALKIT_DATABASE_URL is not set" in result.stderr
    assert list(tmp_path.iterdir()) == []


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
@pytest.mark.usefixtures("frozen_heap")  # its concurrent transfers: see test_bank.py
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


def test_demo_url_help_names_every_table_the_tour_leaves(tmp_path: Path) -> None:
    # the help named three demo tables; the tour also leaves dalkit's own, which a migration
    # of the same database then fails to create ("relation dalkit_audit_log already exists")
    database = tmp_path / "tour.db"
    result = invoke("demo", "--url", f"sqlite:///{database}")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {name for (name,) in rows}
    connection.close()
    command: Any = typer.main.get_command(app)
    (option,) = [p for p in command.commands["demo"].params if p.name == "url"]
    help_text = getattr(option, "help", "")
    assert "demo_*" in help_text
    assert sorted(t for t in tables if not t.startswith("demo_") and t not in help_text) == []


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


def test_the_command_line_and_migrations_work_without_the_async_extras(tmp_path: Path) -> None:
    # pip install 'dalkit[cli]' brings no greenlet: before, every command (dalkit doctor
    # included) and `from dalkit.migrations import Migrations` failed with "dalkit.AsyncDatabase
    # needs greenlet", as they imported AsyncDatabase to tell the two kinds apart
    script = (
        "import sys\n"
        "sys.modules['greenlet'] = None  # as if not installed\n"
        "import sqlalchemy as sa\n"
        "from dalkit import Database\n"
        "from dalkit.migrations import Migrations\n"
        "metadata = sa.MetaData()\n"
        "sa.Table('notes', metadata, sa.Column('id', sa.BigInteger, primary_key=True))\n"
        "with Database('sqlite:///app.db') as db:\n"
        "    migrations = Migrations(db, 'migrations', metadata)\n"
        "    migrations.init()\n"
        "    first = migrations.revision('notes')\n"
        "    assert migrations.upgrade().applied == [first.revision]\n"
        "from dalkit.cli import main\n"
        "sys.argv = ['dalkit', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {**os.environ, "DALKIT_DATABASE_URL": "sqlite:///app.db", "COLUMNS": "200"}
    for command in (["migrate", "current"], ["doctor", "--json"]):
        done = subprocess.run(
            [sys.executable, "-c", script, *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
