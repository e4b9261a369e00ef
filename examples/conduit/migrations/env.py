"""Alembic's env.py, for running this directory with the plain ``alembic`` command.

dalkit does not use this file: ``dalkit migrate`` and ``Migrations`` run the same revisions with
timeouts, the migration lock, linting and backups. Plain Alembic reads DALKIT_DATABASE_URL here.
"""

import os

from alembic import context
from sqlalchemy import create_engine

import dalkit.migrations  # noqa: F401  (registers op.create_index_concurrently)

url = os.environ["DALKIT_DATABASE_URL"]
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
