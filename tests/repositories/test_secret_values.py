"""A value written to a field named like a secret (``password_hash``, ``pin``) appears in no
error a repository raises: not in the row a BulkLoadError shows, nor in the words of a value
refused for the field, on either backend, sync and async."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    BulkLoadError,
    Database,
    InvalidQueryError,
    Repository,
)

from .conftest import backend_url


class Base(DeclarativeBase):
    pass


class Vault(Base):
    __tablename__ = "vault_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(100), default="")
    pin: Mapped[int] = mapped_column(sa.SmallInteger, default=0)


class Vaults(Repository[Vault]):
    model = Vault


class AsyncVaults(AsyncRepository[Vault]):
    model = Vault


HASH = "$2b$12$S3cr3tHash"
# each load fails at its last row, which holds a secret
LOADS: dict[str, list[dict[str, Any]]] = {
    "a duplicate": [{"email": "a"}, {"email": "a", "password_hash": HASH}],
    "a pin that is no number": [{"email": "b", "pin": "8231x"}],
    "a pin out of range": [{"email": "c", "pin": 9_823_104}],
    "a row of other fields": [
        {"email": "d", "password_hash": "x"},
        {"email": "e", "pin": 1, "password_hash": HASH},
    ],
}
SHOWN = (HASH, "8231", "9823104")


def _shows_no_secret(error: Exception) -> bool:
    return not any(secret in str(error) for secret in SHOWN)


@pytest.mark.parametrize("load", sorted(LOADS))
def test_a_bulk_load_error_shows_no_secret_of_its_row(
    sql_backend: str, request: pytest.FixtureRequest, load: str
) -> None:
    with Database(backend_url(request, sql_backend, is_async=False, shared=False)) as db:
        Base.metadata.create_all(db.engine)
        with pytest.raises(BulkLoadError) as caught, db.transaction() as session:
            Vaults(session).bulk_insert(LOADS[load])
        with pytest.raises(InvalidQueryError) as refused, db.transaction() as session:
            entity = Vaults(session).add(Vault(email="f"))
            Vaults(session).update(entity, pin="8231x")
    assert caught.value.row_index == len(LOADS[load]) - 1
    assert _shows_no_secret(caught.value), str(caught.value)
    assert str(refused.value).startswith("pin: not a value for its int column")
    assert "8231" not in str(refused.value)


@pytest.mark.parametrize("load", sorted(LOADS))
async def test_an_async_bulk_load_error_shows_no_secret_of_its_row(
    sql_backend: str, request: pytest.FixtureRequest, load: str
) -> None:
    async with AsyncDatabase(backend_url(request, sql_backend, is_async=True, shared=False)) as db:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        with pytest.raises(BulkLoadError) as caught:
            async with db.transaction() as session:
                await AsyncVaults(session).bulk_insert(LOADS[load])
    assert caught.value.row_index == len(LOADS[load]) - 1
    assert _shows_no_secret(caught.value), str(caught.value)
