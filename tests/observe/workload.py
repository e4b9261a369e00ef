"""A one-off workload for ``dalkit inspect queries --run``: called with the Database."""

from __future__ import annotations

import sqlalchemy as sa

from dalkit import Database


def run(db: Database) -> None:
    with db.connection() as conn:
        for n in range(3):
            conn.execute(sa.text("SELECT count(*) FROM obs_posts WHERE id > :n"), {"n": n})
