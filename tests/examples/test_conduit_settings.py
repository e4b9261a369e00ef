"""Conduit's settings show no secret in their repr (they end up in logs and tracebacks): the
database URL's password is masked, the JWT and cursor secrets and the Redis URL left out."""

from __future__ import annotations

import dataclasses

import pytest

from .conftest import SETTINGS

SECRETS = ("s3cretPW", "redisPW", SETTINGS.jwt_secret, SETTINGS.secret_key)


def test_the_repr_masks_the_database_password_and_shows_no_secret() -> None:
    settings = dataclasses.replace(
        SETTINGS,
        database_url="postgresql+asyncpg://app:s3cretPW@db.example.com:5432/conduit",
        redis_url="redis://:redisPW@cache.example.com/0",
    )
    shown = repr(settings)
    assert "database_url='postgresql+asyncpg://app:***@db.example.com:5432/conduit'" in shown
    assert "token_lifetime_s=604800" in shown
    assert not [secret for secret in SECRETS if secret in shown]


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///conduit.db", "postgresql://app@localhost/conduit"]
)
def test_a_url_without_a_password_is_shown_as_it_is(url: str) -> None:
    assert f"database_url={url!r}" in repr(dataclasses.replace(SETTINGS, database_url=url))


def test_an_unparsable_url_is_not_shown_at_all() -> None:
    settings = dataclasses.replace(SETTINGS, database_url="not a url, s3cretPW")
    assert "database_url='***'" in repr(settings)
