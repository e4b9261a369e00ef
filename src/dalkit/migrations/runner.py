"""The engine room, on one sync Connection (a sync engine's, or an async one's via ``run_sync``):
read heads, plan steps, run each revision in its own transaction with lock-timeout retries,
generate revisions. dalkit's env.py logic lives here; no ``alembic.ini`` or env.py is read."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic.autogenerate import RevisionContext
from alembic.config import Config
from alembic.operations import ops
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import Script
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from dalkit.errors import DatabaseBusyError, DatabaseError
from dalkit.migrations.concurrent import LOCK_NOT_AVAILABLE, use_concurrent_indexes
from dalkit.migrations.enums import enum_differences
from dalkit.migrations.errors import MigrationError
from dalkit.migrations.locks import migration_lock, session_timeouts, timeout_statements
from dalkit.migrations.partial import CommittedWork, track_committed_work
from dalkit.migrations.scripts import DalkitScriptDirectory
from dalkit.migrations.settings import MigrationSettings

T = TypeVar("T")

__all__ = ["Runner", "StepCallback", "alembic_errors", "script_of"]

log = logging.getLogger("dalkit.migrations")

#: called before the steps run, with the scripts about to run (lint, backup), then per step
PlanCallback = Callable[[Sequence[Script]], None]
StepCallback = Callable[[Script], None]
#: called under the migration lock when a step failed, before the error propagates
FailureCallback = Callable[[Connection, Exception], None]


class Runner:
    """Runs Alembic's machinery for one directory, target metadata and settings."""

    def __init__(
        self,
        script: DalkitScriptDirectory,
        config: Config,
        metadatas: Sequence[sa.MetaData],
        settings: MigrationSettings,
    ) -> None:
        self.script = script
        self.config = config
        self.metadatas = list(metadatas)
        self.settings = settings
        #: the revision that raised during the last migrate(), if one did
        self.failed_revision: str | None = None
        #: what that revision had committed (by an autocommit block) before it raised
        self.committed: list[str] = []

    def context_options(self) -> dict[str, Any]:
        """The options every MigrationContext of ours is configured with."""
        options = {
            "target_metadata": self.metadatas,
            "transaction_per_migration": True,
            "compare_type": True,
            "compare_server_default": True,
            "version_table": self.settings.version_table,
            "render_as_batch": False,
            "dalkit_settings": self.settings,
        }
        if self.settings.ignore_unknown_tables:
            options["include_object"] = _known_tables_only
        return options

    def current(self, connection: Connection) -> tuple[str, ...]:
        """The revisions the database is at (empty before the first upgrade)."""
        context = MigrationContext.configure(
            connection, opts={"version_table": self.settings.version_table}
        )
        heads = context.get_current_heads()
        if connection.in_transaction():
            connection.commit()
        return tuple(heads)

    def plan(self, target: str, heads: Sequence[str], *, down: bool) -> list[RevisionStep]:
        """The steps from ``heads`` to ``target``, in the order they run."""
        # the heads come from the database: one this directory lacks is not the caller's fault
        with alembic_errors(prefix=f"the database is at {', '.join(heads)}: "):
            self.script.get_revisions(tuple(heads))
        at = f"cannot go down to {target} from {', '.join(heads) or 'base'}: " if down else ""
        with alembic_errors(bad_input=True, prefix=at):
            if down:
                return list(self.script._downgrade_revs(target, tuple(heads)))  # type: ignore[arg-type]
            return list(self.script._upgrade_revs(target, tuple(heads)))  # type: ignore[arg-type]

    def migrate(
        self,
        connection: Connection,
        target: str,
        *,
        down: bool,
        before: PlanCallback,
        after_step: StepCallback,
        on_failure: FailureCallback | None = None,
    ) -> list[str]:
        """Under the migration lock and timeouts, run the steps to ``target``; the ids run."""
        with migration_lock(connection, self.settings), session_timeouts(connection, self.settings):
            # another run may still be finishing with the database (SQLite: busy) as it hands
            # over the lock: its heads are read under the same retries as a revision
            heads = self._retrying(
                connection, "reading the heads", lambda: self.current(connection)
            )
            steps = self.plan(target, heads, down=down)
            before([script_of(step) for step in steps])
            pending: list[RevisionStep] = []
            done: list[str] = []
            work = CommittedWork(self.settings.version_table)
            try:
                with (
                    self._environment(connection, lambda _h, _c: list(pending)) as env,
                    track_committed_work(connection, work),
                ):
                    _track_heads(env, self.current(connection))
                    for step in steps:
                        pending[:] = [step]
                        self.failed_revision = script_of(step).revision
                        self._run_with_retries(connection, env, script_of(step), work)
                        self.failed_revision = None
                        done.append(script_of(step).revision)
                        after_step(script_of(step))
            except Exception as exc:
                self.committed = list(work.committed) if self.failed_revision else []
                if on_failure is None:
                    raise
                if connection.in_transaction():
                    connection.rollback()
                # still under the lock: nobody migrates between the failure and the restore
                on_failure(connection, exc)
                raise
            return done

    def _run_with_retries(
        self, connection: Connection, env: EnvironmentContext, script: Script, work: CommittedWork
    ) -> None:
        def run() -> None:
            work.reset()
            try:
                with alembic_errors():
                    env.run_migrations()
            except DatabaseError as exc:
                # a retry runs the whole revision again: not once an autocommit block committed
                # part of it, which would then be repeated ("column ... already exists")
                if _retryable(exc) and work.unrepeatable:
                    raise MigrationError(
                        f"{_reason(exc)} ({exc}); not retried: a retry would repeat what the "
                        "revision had committed"
                    ) from exc
                raise

        self._retrying(connection, f"revision {script.revision}", run)

    def _retrying(self, connection: Connection, what: str, work: Callable[[], T]) -> T:
        """``work()``, run again (after rolling back) while the database is busy or a lock
        timed out, under the settings' retries and backoff."""
        attempt = 0
        while True:
            try:
                return work()
            except DatabaseError as exc:
                if connection.in_transaction():
                    connection.rollback()
                attempt += 1
                if not _retryable(exc) or attempt > self.settings.lock_retries:
                    raise
                delay = self.settings.backoff(attempt)
                log.warning(
                    "%s: %s; retry %d of %d in %.2f s",
                    what,
                    _reason(exc),
                    attempt,
                    self.settings.lock_retries,
                    delay,
                )
                time.sleep(delay)

    @contextmanager
    def _environment(
        self, connection: Connection | None, fn: Any, **extra: Any
    ) -> Iterator[EnvironmentContext]:
        with EnvironmentContext(self.config, self.script, fn=fn, **extra) as env:
            env.configure(connection=connection, **self.context_options())
            yield env

    def offline_sql(self, dialect: str, start: str | None, target: str, *, down: bool) -> str:
        """The SQL of the steps from ``start`` to ``target``, without a database."""
        import io

        buffer = io.StringIO()
        heads = () if start is None else (start,)
        steps = self.plan(target, heads, down=down)
        with EnvironmentContext(
            self.config, self.script, fn=lambda _h, _c: steps, as_sql=True
        ) as env:
            env.configure(
                dialect_name=dialect,
                output_buffer=buffer,
                starting_rev=start,
                destination_rev=target,
                **self.context_options(),
            )
            with env.begin_transaction(), alembic_errors():
                env.run_migrations()
        if dialect != "postgresql":
            return buffer.getvalue()
        # the session-wide timeouts `upgrade` runs under, so a DBA's psql run is protected too
        timeouts = timeout_statements(self.settings)
        if not timeouts:
            return buffer.getvalue()
        resets = [f"RESET {statement.split()[1]}" for statement in timeouts]
        head = "".join(f"{statement};\n\n" for statement in timeouts)
        tail = "".join(f"{statement};\n\n" for statement in resets)
        return head + buffer.getvalue() + tail

    def revision(
        self, connection: Connection | None, message: str, *, autogenerate: bool
    ) -> list[Script]:
        """Write a new revision (autogenerated against ``connection`` when asked)."""
        arguments = {
            "message": message,
            "autogenerate": autogenerate,
            "sql": False,
            "head": "head",
            "splice": False,
            "branch_label": None,
            "version_path": None,
            "rev_id": None,
            "depends_on": None,
        }

        def directives(context: MigrationContext, _rev: Any, scripts: list[Any]) -> None:
            for script in scripts:
                if isinstance(script, ops.MigrationScript) and autogenerate:
                    assert context.connection is not None
                    changes = enum_differences(context.connection, self.metadatas)
                    script.upgrade_ops_list[-1].ops.extend(changes)
                    script.downgrade_ops_list[-1].ops[:0] = [c.reverse() for c in changes]
                    use_concurrent_indexes(script)

        revision_context = RevisionContext(
            self.config, self.script, arguments, process_revision_directives=directives
        )
        with alembic_errors():
            if autogenerate:
                if connection is None:
                    raise MigrationError("autogenerate needs a database connection")

                def fn(rev: Any, context: MigrationContext) -> list[Any]:
                    revision_context.run_autogenerate(rev, context)
                    return []

                with self._environment(
                    connection,
                    fn,
                    template_args=revision_context.template_args,
                    revision_context=revision_context,
                ) as env:
                    env.run_migrations()
                if connection.in_transaction():
                    connection.commit()
            return [s for s in revision_context.generate_scripts() if s is not None]


def script_of(step: RevisionStep) -> Script:
    """The Script a step runs."""
    revision = step.revision
    assert isinstance(revision, Script)
    return revision


def _track_heads(env: EnvironmentContext, heads: tuple[str, ...]) -> None:
    """Serve the heads from memory between our one-step runs instead of a SELECT per step:
    each step commits its version row, and a failed one changes nothing."""
    context = env.get_context()
    current = [tuple(heads)]

    def after(*, heads: set[str], **_: Any) -> None:
        current[0] = tuple(heads)

    context.on_version_apply_callbacks = [*context.on_version_apply_callbacks, after]
    context.get_current_heads = lambda: current[0]  # type: ignore[method-assign]


def _known_tables_only(
    _object: Any, _name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "table" and reflected and compare_to is None)


def _retryable(exc: DatabaseError) -> bool:
    return exc.sqlstate == LOCK_NOT_AVAILABLE or isinstance(exc, DatabaseBusyError)


def _reason(exc: DatabaseError) -> str:
    return "lock timeout" if exc.sqlstate == LOCK_NOT_AVAILABLE else "database busy"


@contextmanager
def alembic_errors(*, bad_input: bool = False, prefix: str = "") -> Iterator[None]:
    """Alembic's errors (an unknown revision, several heads...) as MigrationError.

    Args:
        bad_input: Whether they are the caller's (a revision or range that was asked for).
        prefix: Put before Alembic's message.

    Yields:
        Nothing; the block runs inside.

    Raises:
        MigrationError: For CommandError and RevisionError.
    """
    try:
        yield
    except (CommandError, RevisionError) as exc:
        raise MigrationError(f"{prefix}{exc}", bad_input=bad_input) from exc
