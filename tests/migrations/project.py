"""A small project for the migrations tests: its models at two stages, and a revision writer."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa


def models(stage: int) -> sa.MetaData:
    """The project's models: stage 1 has users; stage 2 adds a column with a server default, an
    index on an existing table, an enum value and the notes table (made by a .sql revision)."""
    metadata = sa.MetaData()
    moods = ("happy", "sad", "meh") if stage >= 2 else ("happy", "sad")
    users = sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("mood", sa.Enum(*moods, name="mood"), nullable=True),
    )
    if stage >= 2:
        users.append_column(sa.Column("name", sa.String(50), server_default="anonymous"))
        sa.Index("ix_users_email", users.c.email)
        sa.Table(
            "notes",
            metadata,
            sa.Column("id", sa.BigInteger, primary_key=True),
            sa.Column("body", sa.Text),
        )
    return metadata


REVISION = '''"""{message}"""
import time

import sqlalchemy as sa
from alembic import op

from dalkit.migrations import safety_assured

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def write_revision(
    directory: Path,
    revision: str,
    down: str | None,
    upgrade: str,
    downgrade: str = "pass",
    message: str = "",
) -> Path:
    """Write a Python revision file with these bodies; return its path."""
    versions = directory / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    path = versions / f"{revision}_{message.replace(' ', '_') or 'rev'}.py"
    path.write_text(
        REVISION.format(
            message=message or revision,
            revision=revision,
            down=down,
            upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
            downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
        )
    )
    return path


@contextmanager
def lock_held(url: str, sql: str, seconds: float = 1.0) -> Iterator[None]:
    """Run ``sql`` in a transaction of another connection that ends ``seconds`` later (or at the
    block's end, whichever comes later): the block meets its locks."""
    with psycopg.connect(url) as blocker:
        blocker.execute(sql)
        release = threading.Timer(seconds, blocker.commit)
        release.start()
        try:
            yield
        finally:
            release.join()
