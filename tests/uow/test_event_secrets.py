"""A handler that fails is logged with the event it failed for, and the event's secret-looking
fields (a reset token, a password) are shown as ``***`` there: the log is no place for them."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from dalkit import DomainEvent, EventBus


@dataclasses.dataclass(frozen=True, kw_only=True)
class PasswordResetRequested(DomainEvent):
    user_id: int
    reset_token: str


def test_the_log_of_a_failed_handler_masks_the_events_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def mail(event: PasswordResetRequested) -> None:
        raise RuntimeError("mail server down")

    bus = EventBus()
    bus.subscribe(PasswordResetRequested, mail)
    event = PasswordResetRequested(user_id=7, reset_token="tok_3f9a1c")
    with caplog.at_level(logging.ERROR, logger="dalkit.events"):
        (failure,) = bus.publish(event)
    assert failure.event is event
    (record,) = caplog.records
    assert "tok_3f9a1c" not in record.getMessage()
    assert "reset_token='***'" in record.getMessage()
    assert f"event_id='{event.event_id}'" in record.getMessage()
    assert "user_id=7" in record.getMessage()
