"""``dalkit outbox status`` and ``dalkit outbox relay`` (``--once``, and stopped by signals) on a
real database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis
from typer.testing import CliRunner

from dalkit import Database, UnitOfWork
from dalkit.cli import app
from dalkit.outbox.relay import read_status

from .models import AccountCredited


def fill(url: str, count: int) -> list[str]:
    with Database(url) as db:
        db.create_all()
        with UnitOfWork(db, outbox=True) as uow:
            events = [AccountCredited(account_id=1, amount=n) for n in range(count)]
            for event in events:
                uow.publish(event, aggregate=("Account", 1))
    return [e.event_id for e in events]


def test_status_shows_the_pending_messages(db_url: str) -> None:
    fill(db_url, 3)
    result = CliRunner().invoke(app, ["outbox", "status", "--url", db_url])
    assert result.exit_code == 0, result.output
    assert "pending" in result.output
    assert "3" in result.output


def test_relay_once_publishes_to_a_redis_stream(db_url: str, redis_url: str) -> None:
    event_ids = fill(db_url, 2)
    stream = f"cli-test:{event_ids[0]}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        result = CliRunner().invoke(
            app,
            [
                "outbox",
                "relay",
                "--url",
                db_url,
                "--once",
                "--redis-url",
                redis_url,
                "--stream",
                stream,
            ],
        )
        assert result.exit_code == 0, result.output
        assert "published 2, failed 0" in result.output
        # redis-py types replies loosely (bytes or str, maybe None): decode_responses gives str
        entries: list[tuple[str, dict[str, str]]] = client.xrange(stream)  # type: ignore[assignment]
        assert [fields["event_id"] for _, fields in entries] == event_ids
    finally:
        client.delete(stream)
        client.close()


def test_relay_without_a_destination_exits_2(db_url: str) -> None:
    result = CliRunner().invoke(app, ["outbox", "relay", "--url", db_url, "--once"])
    assert result.exit_code == 2
    assert "--redis-url" in result.output


HANGING_PUBLISHER = """
import sys, time

class Hanging:
    def publish(self, message):
        print("publishing", message.event_id, flush=True)
        time.sleep(600)

def make():
    return Hanging()
"""


def test_a_second_sigterm_stops_a_relay_whose_publish_hangs_and_leaves_the_message_pending(
    db_url: str, project_module: Callable[[str], str]
) -> None:
    (event_id,) = fill(db_url, 1)
    module = project_module(HANGING_PUBLISHER)
    command = [
        sys.executable,
        "-m",
        "dalkit.cli",
        "outbox",
        "relay",
        "--publisher",
        f"{module}:make",
    ]
    relay = subprocess.Popen(
        command,
        env={**os.environ, "DALKIT_DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None
        for line in relay.stdout:
            if line.startswith("publishing"):
                break
        assert line.split() == ["publishing", event_id]
        relay.send_signal(signal.SIGTERM)  # after the round: which does not end
        with pytest.raises(subprocess.TimeoutExpired):
            relay.wait(timeout=1)
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        relay.kill()
        _, errors = relay.communicate()
    assert "stopped during a round" in errors
    with Database(db_url) as db:
        assert read_status(db).pending == 1
