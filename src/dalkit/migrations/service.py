"""The sync work behind each command, on one Connection: the Migrations facade runs it directly
on a sync engine or through ``AsyncConnection.run_sync`` on an async one (asyncpg, aiosqlite)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic.script import Script
from sqlalchemy.engine import Connection

from dalkit import metadata as dalkit_metadata
from dalkit.migrations.backup import restore_backup, take_backup
from dalkit.migrations.drift import differences
from dalkit.migrations.errors import (
    MigrationError,
    MigrationFailedError,
    SchemaDriftError,
    UnsafeMigrationError,
)
from dalkit.migrations.lint import Finding, blocking, lint_scripts
from dalkit.migrations.locks import migration_lock
from dalkit.migrations.partial import unrepeatable
from dalkit.migrations.results import NewRevision, RevisionInfo, UpgradeResult
from dalkit.migrations.runner import Runner, alembic_errors
from dalkit.migrations.runner import script_of as _script
from dalkit.migrations.scripts import make_config, open_directory
from dalkit.migrations.settings import MigrationSettings

__all__ = ["MigrationService"]


@dataclass
class _Run:
    """What one upgrade or downgrade found and did so far."""

    total: int = 0
    done: int = 0
    findings: list[Finding] = field(default_factory=list)
    backup: list[Path] = field(default_factory=list)


class MigrationService:
    """Everything a command does, given a Connection when it needs one."""

    def __init__(
        self,
        directory: Path,
        metadatas: Sequence[sa.MetaData],
        settings: MigrationSettings,
        password: str | None = None,
    ) -> None:
        self.directory = directory
        # the database's password when its URL holds none (a connect argument): the backup
        # tools connect with it
        self.password = password
        self.settings = settings
        self.metadatas = list(metadatas)
        self.has_models = bool(self.metadatas)
        if settings.include_dalkit_tables and dalkit_metadata not in self.metadatas:
            self.metadatas.append(dalkit_metadata)

    def runner(self) -> Runner:
        """A runner over a fresh read of the directory (revisions written since are seen)."""
        return Runner(
            open_directory(self.directory),
            make_config(self.directory, self.settings.version_table),
            self.metadatas,
            self.settings,
        )

    def lint(self, scripts: Sequence[Script]) -> list[Finding]:
        return lint_scripts(
            scripts,
            dialect=self.settings.lint_dialect,
            lock_timeout=self.settings.lock_timeout_ms is not None,
        )

    def migrate(
        self,
        connection: Connection,
        target: str,
        *,
        down: bool,
        backup: bool,
        allow_unsafe: bool,
        on_step: Callable[[RevisionInfo, int, int], None] | None,
    ) -> UpgradeResult:
        runner = self.runner()
        run = _Run()
        backup_path = run.backup

        def before(scripts: Sequence[Script]) -> None:
            run.total = len(scripts)
            if not down:
                run.findings = self.lint(scripts)
                if blocking(run.findings) and not allow_unsafe:
                    raise UnsafeMigrationError(blocking(run.findings))
            if backup and scripts:
                url, label = connection.engine.url, scripts[-1].revision
                backup_path.append(take_backup(url, self.settings.backup_dir, label, self.password))

        def after_step(script: Script) -> None:
            run.done += 1
            if on_step is not None:
                on_step(RevisionInfo.of(script), run.done, run.total)

        def on_failure(failed_connection: Connection, exc: Exception) -> None:
            revision, committed = runner.failed_revision, runner.committed
            what = f"revision {revision} failed: {type(exc).__name__}: {exc}"
            # what the failed revision itself left (None: it failed outside one, in on_step...)
            left = f"; {_left_behind(committed)}" if revision else ""
            if not backup_path:
                raise MigrationFailedError(
                    f"{what}{left}; no backup was taken, so revisions applied before it in this "
                    "run stay applied",
                    revision=revision,
                    restored=False,
                    backup=None,
                    committed=committed,
                ) from exc
            try:
                restore_backup(failed_connection, backup_path[0], self.password)
            except Exception as restore_exc:
                raise MigrationFailedError(
                    f"{what}{left}; restoring {backup_path[0]} failed too: "
                    f"{type(restore_exc).__name__}: {restore_exc}",
                    revision=revision,
                    restored=False,
                    backup=backup_path[0],
                    committed=committed,
                ) from exc
            raise MigrationFailedError(
                f"{what}; the database was restored from {backup_path[0]} "
                "to its state before the run",
                revision=revision,
                restored=True,
                backup=backup_path[0],
            ) from exc

        applied = runner.migrate(
            connection,
            target,
            down=down,
            before=before,
            after_step=after_step,
            on_failure=on_failure,
        )
        return UpgradeResult(applied, backup_path[0] if backup_path else None, run.findings)

    def revision(
        self, connection: Connection | None, message: str, *, autogenerate: bool
    ) -> NewRevision:
        if autogenerate:
            self._require_models("autogenerate")
        runner = self.runner()
        scripts = runner.revision(connection, message, autogenerate=autogenerate)
        if len(scripts) != 1:
            raise MigrationError(f"expected one new revision, alembic wrote {len(scripts)}")
        return NewRevision(scripts[0].revision, Path(scripts[0].path), self.lint(scripts))

    def current(self, connection: Connection) -> tuple[str, ...]:
        return self.runner().current(connection)

    def pending(self, connection: Connection) -> list[RevisionInfo]:
        runner = self.runner()
        heads = runner.script.get_heads()
        steps = runner.plan("heads", runner.current(connection), down=False)
        return [RevisionInfo.of(_script(step), tuple(heads)) for step in steps]

    def history(self) -> list[RevisionInfo]:
        script = self.runner().script
        heads = tuple(script.get_heads())
        return [RevisionInfo.of(s, heads) for s in reversed(list(script.walk_revisions()))]

    def _require_models(self, what: str) -> None:
        # against dalkit's tables alone, every table of the application would look obsolete
        if not self.has_models:
            raise MigrationError(
                f"{what} needs your models: Migrations(db, directory, metadata=Base.metadata) "
                "or --metadata module:attribute"
            )

    def check(self, connection: Connection) -> None:
        self._require_models("check")
        found = differences(connection, self.metadatas, self.runner().context_options())
        if found:
            raise SchemaDriftError(found)

    def restore(self, connection: Connection, path: Path) -> None:
        with migration_lock(connection, self.settings):
            restore_backup(connection, path, self.password)

    def scripts_in(self, revision_range: str | None) -> list[Script]:
        """The scripts of ``"start:end"`` (either side may be omitted), oldest first."""
        script = self.runner().script
        if revision_range is None:
            return list(reversed(list(script.walk_revisions())))
        start, _, end = revision_range.partition(":")
        with alembic_errors(bad_input=True):
            walked = list(script.walk_revisions(base=start or "base", head=end or "heads"))
        return list(reversed(walked))

    def sql(self, revision_range: str, dialect: str) -> str:
        """The offline SQL of ``"start:end"``; a start after its end gives the downgrade's."""
        start, _, end = revision_range.partition(":")
        runner = self.runner()
        order = [script.revision for script in self.scripts_in(None)]

        def resolve(name: str) -> str | None:
            if name in ("", "base"):
                return None
            found = runner.script.get_revision("head" if name == "heads" else name)
            return None if found is None else found.revision

        with alembic_errors(bad_input=True):
            first, last = resolve(start), resolve(end or "head")
        if first is not None and (last is None or order.index(last) < order.index(first)):
            return runner.offline_sql(dialect, first, last or "base", down=True)
        return runner.offline_sql(dialect, first, last or "base", down=False)


def _left_behind(committed: Sequence[str]) -> str:
    """What the failed revision left applied, and what to do about it."""
    if not committed:
        return "it was rolled back"
    statements = "".join(f"\n    {statement}" for statement in committed)
    if not unrepeatable(committed):
        return (
            f"these concurrent index statements stay applied (a new run repeats them):{statements}"
        )
    return (
        "these statements of it had been committed by an autocommit block (such as a "
        "concurrent index's) before it failed, and stay applied while the revision is not "
        f"recorded:{statements}\nrunning it again would repeat them: undo them by hand (or "
        "restore a backup) first; a concurrent index in a revision of its own avoids this"
    )
