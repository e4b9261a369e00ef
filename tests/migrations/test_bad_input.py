"""Bad input to `dalkit migrate` and `Migrations`: a URL parsed as `dalkit doctor` parses it (an
'@' in the password works, a malformed URL is exit 2 showing no password), a bad --metadata or
revision is a typed error and exit 2, and a broken revision file is a MigrationError naming it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from dalkit import Database
from dalkit.cli._app import app
from dalkit.migrations import MigrationError, Migrations

from .project import write_revision

SECRET = "S3cretPW"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Run]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DALKIT_DATABASE_URL", raising=False)
    before = set(sys.modules)
    yield _Run(tmp_path)
    for name in set(sys.modules) - before:
        if name.startswith("models_"):
            del sys.modules[name]


class _Run:
    """`dalkit migrate ...` on a SQLite project with one revision, r1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'app.db'}"
        write_revision(root / "m", "r1", None, "pass")

    def create_database(self) -> None:
        """An empty SQLite database at ``self.url`` (an empty file is one)."""
        (self.root / "app.db").touch()

    def __call__(self, *args: str, url: str | None = None, code: int) -> str:
        arguments = ["migrate", *args, "--directory", str(self.root / "m")]
        env = {"COLUMNS": "240", "DALKIT_DATABASE_URL": url or self.url}
        result: Result = CliRunner(env=env).invoke(app, arguments)
        # a clean exit: typer.Exit, never an exception escaping as a traceback
        assert isinstance(result.exception, SystemExit | None), result.exception
        assert result.exit_code == code, result.output
        return result.output


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://bob:{SECRET}/db",  # '@host' forgotten
        f"postgresql://bob:{SECRET}127.0.0.1:5432/db",
        f"postgresql://bob:{SECRET}@127.0.0.1:notaport/db",
        "not a url",
        f"postgresq1://bob:{SECRET}@h/db",
    ],
)
def test_a_malformed_url_is_bad_input_that_shows_no_password(run: _Run, url: str) -> None:
    output = run("current", url=url, code=2)
    assert SECRET not in output
    assert "dalkit migrate current:" in output


def test_an_at_sign_in_the_password_works_as_in_doctor(
    run: _Run, postgres_database_url: str
) -> None:
    server = make_url(postgres_database_url)
    role, password = f"at_{uuid.uuid4().hex[:8]}", "my@Secret9"
    with psycopg.connect(postgres_database_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
        try:
            url = f"postgresql://{role}:{password}@{server.host}:{server.port}/{server.database}"
            assert "base (no revision applied)" in run("current", url=url, code=0)
            assert "applied 1 revision(s)" in run("up", url=url, code=0)
        finally:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_bad_metadata_option_is_bad_input(run: _Run) -> None:
    (run.root / "models_a.py").write_text("import sqlalchemy as sa\nmetadata = sa.MetaData()\n")
    missing = run("check", "--metadata", "nosuchmod:metadata", code=2)
    assert "No module named 'nosuchmod'" in missing
    assert "has no attribute 'nosuch'" in run("check", "--metadata", "models_a:nosuch", code=2)
    assert "module:attribute" in run("check", "--metadata", ":metadata", code=2)


@pytest.mark.parametrize(
    "args",
    [("up", "deadbeef0000"), ("down", "deadbeef"), ("sql", "deadbeef:head"), ("lint", "r1:nope")],
)
def test_an_unknown_revision_is_bad_input(run: _Run, args: tuple[str, ...]) -> None:
    run.create_database()  # `down` refuses a missing one before reading its target
    output = run(*args, code=2)
    assert "Can't locate revision" in output


def test_going_down_from_base_is_bad_input_saying_where_the_database_is(run: _Run) -> None:
    # before, only Alembic's words: "Relative revision -1 didn't produce 1 migrations"
    run.create_database()
    assert "cannot go down to -1 from base" in run("down", code=2)
    run("up", code=0)
    assert "downgraded 1 revision(s): r1" in run("down", code=0)
    assert "cannot go down to -1 from base" in run("down", code=2)


@pytest.mark.parametrize("given", ["[/x]", "[bold]beef"])
def test_brackets_in_what_was_given_are_shown_as_given(run: _Run, given: str) -> None:
    # Rich would read them as markup: an unmatched closing tag raised MarkupError (exit 1,
    # a traceback), and a known tag vanished from the message
    run.create_database()
    assert f"identified by '{given}'" in run("down", given, code=2)
    path = write_revision(run.root / "m", "r2", "r1", "pass", message="fix")
    path.write_text(path.read_text().replace('"""fix"""', '"""fix [/x] and [bold]"""'))
    assert "applied 2 revision(s)" in run("up", code=0)


def test_the_api_raises_migration_error_for_unknown_revisions(directory: Path) -> None:
    write_revision(directory, "r1", None, "pass")
    db = Database(f"sqlite:///{directory.parent / 'app.db'}")
    migrations = Migrations(db, directory)
    try:
        for call in (
            lambda: migrations.sql("deadbeef:head"),
            lambda: migrations.lint("deadbeef:head"),
            lambda: migrations.upgrade("deadbeef"),
            lambda: migrations.downgrade("deadbeef"),
        ):
            with pytest.raises(MigrationError, match="deadbeef") as raised:
                call()
            assert raised.value.bad_input
        # the database at a revision the directory lacks: its state, not the caller's input
        migrations.upgrade()
        (directory / "versions" / "r1_rev.py").unlink()
        write_revision(directory, "r2", None, "pass")
        with pytest.raises(MigrationError, match="the database is at r1") as state:
            migrations.upgrade()
        assert not state.value.bad_input
    finally:
        db.dispose()


BROKEN = {
    "syntax": ("def upgrade(:\n    pass\n", "SyntaxError"),
    "import": ("import not_a_module_xyz\n", "No module named 'not_a_module_xyz'"),
    "parent": ("revision = 's2'\ndown_revision = 'nope'\n", "down_revision 'nope' names no"),
    "twice": ("revision = 'r1'\ndown_revision = None\n", "is also the revision of"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_revision_file_is_a_migration_error_naming_it(run: _Run, case: str) -> None:
    text, expected = BROKEN[case]
    path = run.root / "m" / "versions" / "s2_broken.py"
    path.write_text(text + "def downgrade():\n    pass\n")
    db = Database(run.url)
    try:
        with pytest.raises(MigrationError, match=expected) as broken:
            Migrations(db, run.root / "m").history()
    finally:
        db.dispose()
    assert str(path) in str(broken.value)
    for command in ("up", "history", "lint"):
        assert "s2_broken.py" in run(command, code=1)


@pytest.mark.parametrize(
    ("args", "driver"),
    [
        (("current",), ""),
        (("pending",), ""),
        (("history",), ""),
        (("check", "--metadata", "models_typo:metadata"), ""),
        # autogenerate compares with the live database: a missing one is no empty schema
        (("new", "add t", "--metadata", "models_typo:metadata"), ""),
        (("new", "add t", "--metadata", "models_typo:metadata"), "+aiosqlite"),
        (("current",), "+aiosqlite"),
        (("history",), "+aiosqlite"),
    ],
)
def test_a_command_that_reads_or_compares_the_database_refuses_a_missing_file_and_creates_none(
    run: _Run, args: tuple[str, ...], driver: str
) -> None:
    # before, a mistyped path became an empty database reported as "base (no revision applied)"
    (run.root / "models_typo.py").write_text("import sqlalchemy as sa\nmetadata = sa.MetaData()\n")
    typo = run.root / "typo.db"
    output = run(*args, url=f"sqlite{driver}:///{typo}", code=1)
    assert f"ConnectionFailedError:\nno SQLite database file at {typo}" in output
    assert "`dalkit migrate up` creates it" in output
    assert not typo.exists()
    assert [p.name for p in (run.root / "m" / "versions").glob("*.py")] == ["r1_rev.py"]
    # `up` writes: it creates the file, which the commands that read then find
    assert "applied 1 revision(s): r1" in run("up", url=f"sqlite:///{typo}", code=0)
    assert "r1" in run("current", url=f"sqlite{driver}:///{typo}", code=0)


@pytest.mark.parametrize("driver", ["", "+aiosqlite"])
def test_down_on_a_missing_sqlite_file_is_bad_input_and_creates_none(
    run: _Run, driver: str
) -> None:
    # before, it created the file, then failed with "cannot go down to -1 from base"
    typo = run.root / "typo.db"
    for target in ("-1", "base", "r1"):
        output = run("down", target, url=f"sqlite{driver}:///{typo}", code=2)
        assert f"dalkit migrate down: cannot go down: no SQLite database file at {typo}" in output
        assert not typo.exists()
