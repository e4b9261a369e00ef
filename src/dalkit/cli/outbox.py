"""``dalkit outbox``: run a relay that delivers the transactional outbox, or show its state.

``relay`` publishes to a Redis stream (``--redis-url``, ``--stream``) or through a publisher of
your own (``--publisher module:factory``, a callable returning a dalkit Publisher).
"""

from __future__ import annotations

import importlib
import signal
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dalkit.cli._render import cell
from dalkit.config import DEFAULT_URL
from dalkit.database import Database
from dalkit.errors import ConfigurationError, DalkitError
from dalkit.outbox.publishers import Publisher, RedisStreamPublisher
from dalkit.outbox.relay import OutboxRelay, read_status
from dalkit.redis.config import URL_ENV as REDIS_URL_ENV
from dalkit.redis.config import RedisConfig

DATABASE_URL_ENV = "DALKIT_DATABASE_URL"

outbox_app = typer.Typer(
    name="outbox",
    help="Deliver the transactional outbox, or show how far behind it is.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        envvar=DATABASE_URL_ENV,
        show_default=DEFAULT_URL,
        help="Database URL; one with a password is better given in the environment.",
    ),
]


@outbox_app.command()
def relay(
    url: UrlOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one round and exit, instead of until stopped.")
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
    """Claim pending outbox messages, publish them, mark them sent (SIGINT/SIGTERM stop it)."""
    try:
        db = Database(url or DEFAULT_URL)
        target = _publisher(publisher, redis_url, stream)
    except ConfigurationError as exc:
        typer.echo(f"dalkit outbox relay: {exc}", err=True)
        raise typer.Exit(2) from None
    relay = OutboxRelay(db, target, batch_size=batch_size)
    try:
        if once:
            result = relay.run_once()
            typer.echo(f"published {result.published}, failed {result.failed}")
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            relay.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        typer.echo(f"relaying the outbox of {db.url}; Ctrl-C stops")
        relay.run_forever()
    except DalkitError as exc:
        typer.echo(f"dalkit outbox relay stopped: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()


@outbox_app.command()
def status(url: UrlOption = None) -> None:
    """Pending messages, the age of the oldest, failing ones and the last error."""
    try:
        db = Database(url or DEFAULT_URL)
    except ConfigurationError as exc:
        typer.echo(f"dalkit outbox status: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        found = read_status(db)
    except DalkitError as exc:
        typer.echo(f"dalkit outbox status: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    table = Table(title=f"outbox of {db.url}", title_justify="left", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    age = found.oldest_pending_age_s
    table.add_row("pending", cell(found.pending))
    table.add_row("oldest pending", cell(None if age is None else f"{age:.1f} s"))
    table.add_row("failing", cell(found.failing))
    table.add_row("sent, not yet pruned", cell(found.sent))
    table.add_row("last error", cell(found.last_error))
    Console().print(table)


def _publisher(spec: str | None, redis_url: str | None, stream: str) -> Publisher:
    if spec is not None:
        module_name, _, attribute = spec.partition(":")
        if not attribute:
            raise ConfigurationError(f"--publisher takes module:factory, not {spec!r}")
        try:
            factory: Any = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load the publisher {spec!r}: {exc}") from None
        made: Publisher = factory()
        return made
    if redis_url is None:
        raise ConfigurationError(
            f"say where to publish: --redis-url (or {REDIS_URL_ENV}) or --publisher"
        )
    from dalkit.redis.client import build_client

    _, client = build_client(RedisConfig.coerce(redis_url))
    return RedisStreamPublisher(client, stream)
