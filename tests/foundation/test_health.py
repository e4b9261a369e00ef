"""Health checks: facts when the server answers, a clear error and no secret when it does not."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, Database


def test_a_healthy_database_reports_latency_version_and_name(db: Database) -> None:
    result = db.health_check()
    assert result.ok
    assert result.error is None
    assert result.latency_ms > 0
    assert result.server_version
    assert result.server_version[0].isdigit()
    assert result.database == db.config.url.database


async def test_a_healthy_async_database_reports_the_same(async_db: AsyncDatabase) -> None:
    result = await async_db.health_check()
    assert result.ok
    assert result.server_version


def test_an_unreachable_server_is_unhealthy_without_raising() -> None:
    # port 1 on loopback: nothing listens there, the refusal is immediate
    with Database("postgresql://app:hunter2-secret@127.0.0.1:1/app", connect_timeout_s=2) as db:
        result = db.health_check()
    assert not result.ok
    assert result.error is not None
    assert "ConnectionFailedError" in result.error
    assert "hunter2-secret" not in repr(result)


async def test_an_unreachable_server_is_unhealthy_for_the_async_database() -> None:
    async with AsyncDatabase("postgresql://app:hunter2-secret@127.0.0.1:1/app") as db:
        result = await db.health_check()
    assert not result.ok
    assert "hunter2-secret" not in repr(result)


@pytest.mark.postgres
def test_a_wrong_password_is_unhealthy_and_the_password_is_never_shown(
    postgres_database_url: str,
) -> None:
    wrong = make_url(postgres_database_url).set(password="Wr0ng-Pa55word")
    with Database(wrong) as db:
        result = db.health_check()
        stats = db.pool_stats()
    assert not result.ok
    assert result.error is not None
    assert "password authentication failed" in result.error
    assert "Wr0ng-Pa55word" not in repr(result)
    assert stats["connections_errors"] == 1


@pytest.mark.postgres
async def test_a_wrong_password_is_unhealthy_for_the_async_database(
    postgres_database_url: str,
) -> None:
    wrong = make_url(postgres_database_url).set(password="Wr0ng-Pa55word")
    async with AsyncDatabase(wrong) as db:
        result = await db.health_check()
    assert not result.ok
    assert "Wr0ng-Pa55word" not in repr(result)
    assert "password authentication failed" in (result.error or "")
