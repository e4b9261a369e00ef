"""`dalkit migrate` on a small SQLite project: init, new, pending, up, current, history, check,
lint, sql, restore and check --roundtrip, with the exit codes scripts rely on."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dalkit.cli._app import app

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("email", sa.String(100), nullable=False),
    {extra}
)
"""


class Project:
    """A project directory with a models module, run through the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'app.db'}"
        self.runner = CliRunner(env={"COLUMNS": "240", "DALKIT_DATABASE_URL": self.url})

    def models(self, extra: str = "") -> str:
        name = f"models_{uuid.uuid4().hex[:8]}"
        (self.root / f"{name}.py").write_text(MODELS.format(extra=extra))
        return f"{name}:metadata"

    def run(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(app, ["migrate", *args, "--directory", str(self.root / "m")])
        output = result.output
        assert result.exit_code == code, output
        return output


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield Project(tmp_path)
    for name in set(sys.modules) - before:
        if name.startswith("models_"):
            del sys.modules[name]


def _revision_ids(text: str) -> list[str]:
    return re.findall(r"\b[0-9a-f]{12}\b", text)


def test_a_project_from_init_to_restore(project: Project) -> None:
    project.run("init")
    assert (project.root / "m" / "versions").is_dir()
    first = project.models()
    # autogenerate compares with the live database: a missing one is refused, not taken for
    # an empty schema; `up` creates it (with no revision yet, an empty history)
    assert "`dalkit migrate up` creates it" in project.run(
        "new", "create users", "--metadata", first, code=1
    )
    assert not (project.root / "app.db").exists()
    assert "nothing to do" in project.run("up")
    created = project.run("new", "create users", "--metadata", first)
    revision = _revision_ids(created)[0]
    assert revision in project.run("pending")
    assert "applied 1 revision(s)" in project.run("up")
    assert "nothing pending" in project.run("pending")
    again = project.run("up")
    # before, a bar of no revision ("migrating ━━━ 0/?") was left above the answer
    assert "nothing to do" in again
    assert "0/?" not in again
    assert revision in project.run("current")
    assert "head current" in project.run("history")
    assert "no drift" in project.run("check", "--metadata", first)

    drifted = project.run(
        "check", "--metadata", project.models("sa.Column('age', sa.Integer)"), code=1
    )
    assert "column users.age: missing in the database" in drifted

    unsafe = project.run("new", "drop email", "--empty")
    path = next((project.root / "m" / "versions").glob("*drop_email.py"))
    path.write_text(
        path.read_text().replace(
            "def upgrade() -> None:\n    pass",
            "def upgrade() -> None:\n    op.drop_column('users', 'email')",
        )
    )
    assert _revision_ids(unsafe)
    refused = project.run("up", code=1)
    assert "dropping-column" in refused
    assert "nothing was run" in refused
    assert "0/?" not in refused
    assert "migrating" not in refused
    assert "dropping-column" in project.run("lint", code=1)
    assert revision in project.run("current")

    applied = project.run("up", "--allow-unsafe")
    backup = re.search(r"backup: (\S+\.sqlite3)", applied)
    assert backup is not None, applied  # on by default once the database has revisions
    assert "applied 1 revision(s)" in applied
    assert "DROP COLUMN email" in project.run("sql", "--dialect", "postgresql")

    project.run("restore", backup.group(1), "--yes")
    assert revision in project.run("current")
    assert "downgraded 1 revision(s)" in project.run("down")
    assert "base" in project.run("current")


def test_check_roundtrip_runs_the_built_in_checks_on_an_empty_database(project: Project) -> None:
    project.run("init")
    metadata = project.models()
    # written against a development database: the roundtrip's own is a new, empty file
    dev = f"sqlite:///{project.root / 'dev.db'}"
    project.run("up", "--url", dev)
    project.run("new", "create users", "--metadata", metadata, "--url", dev)
    project.run("new", "notes", "--sql")
    output = project.run("check", "--roundtrip", "--metadata", metadata)
    for name in ("single head", "up/down/up roundtrip", "downgrades leave no trace", "no drift"):
        assert f"ok {name}" in output
    refused = project.run("check", "--roundtrip", "--metadata", metadata, code=1)
    assert "empty scratch database" in refused


def test_an_async_url_runs_on_an_async_engine(project: Project) -> None:
    project.run("init")
    project.run("up")
    project.run("new", "create users", "--metadata", project.models())
    url = project.url.replace("sqlite://", "sqlite+aiosqlite://")
    assert "applied 1 revision(s)" in project.run("up", "--url", url)
    assert "nothing pending" in project.run("pending", "--url", url)


def test_a_password_never_reaches_the_output(project: Project) -> None:
    project.run("init")
    output = project.run(
        "current", "--url", "postgresql://app:hunter2-secret@127.0.0.1:1/app", code=1
    )
    assert "hunter2-secret" not in output
    assert "failed" in output


def test_down_takes_a_relative_step_and_still_refuses_a_mistyped_option(project: Project) -> None:
    project.run("init")
    for message in ("one", "two", "three"):
        project.run("new", message, "--empty")
    assert "applied 3 revision(s)" in project.run("up")
    # before, the parser read "-2" as an option: "No such option: -2"
    assert "downgraded 2 revision(s)" in project.run("down", "-2")
    refused = project.run("down", "--bakup", code=2)
    assert "no such option: --bakup" in refused
    assert "--backup" in refused
    assert "downgraded 1 revision(s)" in project.run("down", "-1")
    assert "base" in project.run("current")
