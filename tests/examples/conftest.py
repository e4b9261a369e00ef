"""Fixtures for the Conduit API tests: the example app on each backend, driven in-process by
httpx, and a few helpers that register users and write articles through the API."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST

from dalkit import AsyncDatabase

from .conduit_app import Base, Settings, create_app, create_database


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes seconds rather than milliseconds")


SETTINGS = Settings(
    jwt_secret="test-secret-of-thirty-two-bytes!",
    secret_key="cursor-secret-for-tests",
    hasher=PasswordHasher.from_parameters(CHEAPEST),  # tests hash a lot
)


@pytest.fixture
async def conduit_db(async_db_url: str) -> AsyncIterator[AsyncDatabase]:
    """The test's database as Conduit configures it (a secret key for keyset cursors, the
    query cache in memory), with the N+1 detector raising (at its default threshold): an
    endpoint that lazy-loads per row, or runs one statement per row, fails its test."""
    settings = dataclasses.replace(SETTINGS, database_url=async_db_url)
    database, _ = create_database(settings, nplusone="raise")
    try:
        await database.create_all(Base.metadata)
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def api(conduit_db: AsyncDatabase) -> AsyncIterator[httpx.AsyncClient]:
    """The Conduit API on the test's backend."""
    transport = httpx.ASGITransport(app=create_app(conduit_db, SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://conduit") as client:
        yield client


async def register(api: httpx.AsyncClient, name: str) -> dict[str, str]:
    """Register ``name`` and return the Authorization header of their token."""
    body = {"user": {"username": name, "email": f"{name}@example.com", "password": "pw-" + name}}
    response = await api.post("/api/users", json=body)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Token {response.json()['user']['token']}"}


async def publish(
    api: httpx.AsyncClient, auth: dict[str, str], title: str, tags: list[str] | None = None
) -> dict[str, Any]:
    body = {
        "article": {
            "title": title,
            "description": f"about {title}",
            "body": f"all of {title}",
            "tagList": tags or [],
        }
    }
    response = await api.post("/api/articles", json=body, headers=auth)
    assert response.status_code == 201, response.text
    article: dict[str, Any] = response.json()["article"]
    return article
