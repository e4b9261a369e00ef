"""``pip install dalkit`` with no extras: no greenlet, so no asyncio support, and the sync API must
still import and work (SQLAlchemy 2.1 no longer brings greenlet)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dalkit

REPOSITORY = Path(dalkit.__file__).resolve().parents[2]

# what a new user does first with the core install: every line is sync API
SYNC_TOUR = textwrap.dedent(
    """
    import sys
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
    import dalkit

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]

    with dalkit.Database(f"sqlite:///{sys.argv[1]}") as db:
        db.create_all(Base.metadata)
        with db.session() as session:
            session.add(Note(body="hello"))
        with db.transaction(read_only=True) as session:
            assert session.scalar(sa.select(Note.body)) == "hello"
        assert db.health_check().ok
    print("sync tour ok")
    """
)

# a core install has no greenlet: simulated by making the module unimportable
WITHOUT_GREENLET = "import sys; sys.modules['greenlet'] = None\n"


def _run(python: str, source: str, database: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-c", source, str(database)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_sync_tour_runs(tmp_path: Path) -> None:
    result = _run(sys.executable, SYNC_TOUR, tmp_path / "tour.db")
    assert result.returncode == 0, result.stderr
    assert "sync tour ok" in result.stdout


def test_the_sync_api_works_without_greenlet(tmp_path: Path) -> None:
    result = _run(sys.executable, WITHOUT_GREENLET + SYNC_TOUR, tmp_path / "tour.db")
    assert result.returncode == 0, result.stderr


def test_the_async_api_without_greenlet_names_the_extra() -> None:
    source = WITHOUT_GREENLET + textwrap.dedent(
        """
        import dalkit
        try:
            dalkit.AsyncDatabase("sqlite+aiosqlite:///x.db")
        except dalkit.ConfigurationError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "greenlet" in result.stdout


@pytest.mark.slow
def test_a_fresh_install_without_extras_imports_and_works(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    venv = tmp_path / "venv"
    env = {**os.environ, "VIRTUAL_ENV": ""}
    subprocess.run([uv, "venv", "-q", str(venv)], check=True, timeout=120, env=env)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, str(REPOSITORY)],
        check=True,
        timeout=600,
        env=env,
    )
    assert _run(python, "import greenlet", tmp_path / "unused.db").returncode != 0
    result = _run(python, SYNC_TOUR, tmp_path / "tour.db")
    assert result.returncode == 0, result.stderr
    assert "sync tour ok" in result.stdout
