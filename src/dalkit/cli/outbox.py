"""``dalkit outbox``: run a relay that delivers the transactional outbox, or show its state.

``relay`` publishes to a Redis stream (``--redis-url``, ``--stream``) or through a publisher of
your own (``--publisher module:factory``, a callable returning a dalkit Publisher).
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Annotated, Any, cast

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from dalkit.cli._load import load_attribute
from dalkit.cli._render import FLAG_METAVAR, cell
from dalkit.config import URL_ENV as DATABASE_URL_ENV
from dalkit.config import DatabaseConfig
from dalkit.database import Database
from dalkit.engine.options import existing_database_only
from dalkit.errors import ConfigurationError, DalkitError
from dalkit.outbox.publishers import Publisher, RedisStreamPublisher, check_publisher
from dalkit.outbox.relay import OutboxRelay, read_status
from dalkit.redis.config import URL_ENV as REDIS_URL_ENV
from dalkit.redis.config import RedisConfig
from dalkit.tables import outbox as outbox_table

#: the signals that stop ``dalkit outbox relay``: after the round, or at once when sent twice
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

outbox_app = typer.Typer(
    name="outbox",
    help="Deliver the transactional outbox, or show how far behind it is.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        envvar=DATABASE_URL_ENV,
        help="Database URL (required); one with a password is better given in the environment.",
    ),
]


@outbox_app.command()
def relay(
    url: UrlOption = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once", metavar=FLAG_METAVAR, help="Run one round and exit, instead of until stopped."
        ),
    ] = False,
    redis_url: Annotated[
        str | None, typer.Option(envvar=REDIS_URL_ENV, help="Publish to this Redis server.")
    ] = None,
    stream: Annotated[str, typer.Option(help="The Redis stream to XADD to.")] = "dalkit:events",
    publisher: Annotated[
        str | None,
        typer.Option(help="module:factory returning a Publisher, instead of Redis."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Messages claimed per round.")] = 200,
) -> None:
    """Claim pending outbox messages, publish them, mark them sent (SIGINT/SIGTERM stop it after \
its round; a second one stops it at once, exit status 128 + the signal's number)."""
    config = _config("relay", url)
    try:
        target = _publisher(publisher, redis_url, stream)
    except ConfigurationError as exc:
        typer.echo(f"dalkit outbox relay: {exc}", err=True)
        raise typer.Exit(2) from None
    db, shown = _open("relay", config)
    relay = OutboxRelay(db, target, batch_size=batch_size)
    try:
        _require_outbox_table("relay", db, shown)
        if once:
            result = relay.run_once()
            typer.echo(f"published {result.published}, failed {result.failed}")
            return

        signals: list[int] = []

        def stop(signum: int, frame: FrameType | None) -> None:
            signals.append(signum)
            if len(signals) > 1:
                # a second signal: the round does not end (a publish that hangs), so leave it;
                # its transaction rolls back and its messages stay pending
                raise _StopNow(signum)
            relay.stop()

        before = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
        typer.echo(f"relaying the outbox of {shown}; Ctrl-C stops after the round, twice at once")
        try:
            relay.run_forever()
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)
    except _StopNow as now:
        typer.echo(
            "dalkit outbox relay: stopped during a round; its messages stay pending", err=True
        )
        raise typer.Exit(128 + now.signum) from None
    except DalkitError as exc:
        typer.echo(f"dalkit outbox relay stopped: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()


@outbox_app.command()
def status(url: UrlOption = None) -> None:
    """Pending messages, the age of the oldest, failing ones and the last error."""
    db, shown = _open("status", _config("status", url))
    try:
        _require_outbox_table("status", db, shown)
        found = read_status(db)
    except DalkitError as exc:
        typer.echo(f"dalkit outbox status: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    table = Table(title=f"outbox of {shown}", title_justify="left", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    age = found.oldest_pending_age_s
    table.add_row("pending", cell(found.pending))
    table.add_row("oldest pending", cell(None if age is None else f"{age:.1f} s"))
    table.add_row("failing", cell(found.failing))
    table.add_row("sent, not yet pruned", cell(found.sent))
    table.add_row("last error", cell(found.last_error))
    Console().print(table)


class _StopNow(BaseException):
    """A second SIGINT/SIGTERM: the relay leaves its round at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _config(command: str, url: str | None) -> DatabaseConfig:
    """The database as ``dalkit doctor`` finds it: URL from --url or the environment, options
    from the environment; exits 2 when that configuration is unusable."""
    env = {**os.environ, DATABASE_URL_ENV: url} if url else os.environ
    try:
        return DatabaseConfig.from_env(env)
    except ConfigurationError as exc:
        typer.echo(f"dalkit outbox {command}: {exc}", err=True)
        raise typer.Exit(2) from None


def _open(command: str, config: DatabaseConfig) -> tuple[Database, str]:
    """The database of ``config`` and its masked URL as given; exits 2 for a database or driver
    dalkit does not support, as ``_config`` does for a malformed URL, and 1 for a missing
    SQLite file, which is never created."""
    try:
        return Database(existing_database_only(config)), config.safe_url
    except ConfigurationError as exc:
        typer.echo(f"dalkit outbox {command}: {exc}", err=True)
        raise typer.Exit(2) from None
    except DalkitError as exc:
        typer.echo(f"dalkit outbox {command}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _require_outbox_table(command: str, db: Database, shown: str) -> None:
    try:
        with db.engine.connect() as connection:
            found = sa.inspect(connection).has_table(outbox_table.name)
    except DalkitError as exc:
        typer.echo(f"dalkit outbox {command}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not found:
        typer.echo(
            f"dalkit outbox {command}: {shown} has no {outbox_table.name} table; create dalkit's "
            "tables first: `dalkit migrate up` (its migrations include dalkit.metadata) "
            "or db.create_all()",
            err=True,
        )
        raise typer.Exit(1)


def _publisher(spec: str | None, redis_url: str | None, stream: str) -> Publisher:
    if spec is not None:
        return _made_publisher(spec, load_attribute(spec, "--publisher"))
    if redis_url is None:
        raise ConfigurationError(
            f"say where to publish: --redis-url (or {REDIS_URL_ENV}) or --publisher"
        )
    from dalkit.redis.client import build_client

    _, client = build_client(RedisConfig.coerce(redis_url))
    return RedisStreamPublisher(client, stream)


def _made_publisher(spec: str, factory: Any) -> Publisher:
    """What ``factory()`` returns, if it can publish: a factory that cannot be called, or whose
    result has no ``publish`` method, is a mistake in the option, refused before the relay
    claims a message. So is an async ``publish``: this relay would never await it, and every
    message would be marked sent without being delivered (`check_publisher`, as the relay)."""
    if not callable(factory):
        raise ConfigurationError(f"--publisher {spec} is not callable: name a factory")
    try:
        made = factory()
    except Exception as exc:
        raise ConfigurationError(
            f"--publisher {spec}: calling it raised {type(exc).__name__}: {exc}"
        ) from None
    check_publisher(made, Publisher, given=f"what --publisher {spec} returned")
    return cast(Publisher, made)
