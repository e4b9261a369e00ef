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


@dataclasses.dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    note: str = dataclasses.field(default="n0te", repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebhookRegistered(DomainEvent):
    account: Credentials
    headers: tuple[dict[str, str], ...]
    options: dict[str, list[dict[str, str]]]


def test_the_secrets_an_event_holds_deeper_are_masked_in_its_log_and_its_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # only the event's own fields and a mapping in one were masked: a dataclass or a list in
    # it showed a password or an Authorization header in clear
    bus = EventBus()
    bus.subscribe(WebhookRegistered, lambda event: 1 / 0)
    event = WebhookRegistered(
        account=Credentials("hook", "pw_8c1e"),
        headers=({"Authorization": "Bearer tok_77d0", "Accept": "json"},),
        options={"retry": [{"client_secret": "cs_41aa", "tries": "3"}]},
    )
    with caplog.at_level(logging.ERROR, logger="dalkit.events"):
        (failure,) = bus.publish(event)
    (record,) = caplog.records
    for shown in (record.getMessage(), repr(failure)):
        for secret in ("pw_8c1e", "tok_77d0", "cs_41aa", "n0te"):
            assert secret not in shown
        assert "account=Credentials(user='hook', password='***')" in shown
        assert "headers=({'Authorization': '***', 'Accept': 'json'},)" in shown
        assert "options={'retry': [{'client_secret': '***', 'tries': '3'}]}" in shown
    assert failure.event is event
