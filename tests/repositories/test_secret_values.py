"""A value written to a field named like a secret (``password_hash``, ``pin``) appears in no
error a repository raises: not in the row a BulkLoadError shows, nor in the words of a value
refused for the field, on either backend, sync and async."""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    BulkLoadError,
    Database,
    InMemoryRepository,
    InvalidFilterError,
    InvalidQueryError,
    NotFoundError,
    Repository,
    UniqueViolationError,
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


class ResetToken(Base):
    __tablename__ = "vault_reset_tokens"

    token: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    account_id: Mapped[int]


class Pin(Base):
    __tablename__ = "vault_pins"

    pin: Mapped[int] = mapped_column(primary_key=True)


class Vaults(Repository[Vault]):
    model = Vault


class Resets(Repository[ResetToken]):
    model = ResetToken


class FakeResets(InMemoryRepository[ResetToken]):
    model = ResetToken


class Pins(Repository[Pin]):
    model = Pin


class FakeVaults(InMemoryRepository[Vault]):
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
    # nor does a printed traceback, which shows the driver's error it was raised from
    printed = "".join(traceback.format_exception(error))
    return not any(secret in printed for secret in SHOWN)


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
    assert _shows_no_secret(caught.value), "".join(traceback.format_exception(caught.value))
    assert str(refused.value).startswith("pin: not a value for its int column")
    assert "8231" not in str(refused.value)


def test_a_primary_key_named_like_a_secret_is_in_no_error(
    sql_backend: str, request: pytest.FixtureRequest
) -> None:
    # a reset token kept as the key was quoted by the not-found error a miss raised (and an
    # API answered with), by a refusal of the key and by the fake's duplicate-key error
    with Database(backend_url(request, sql_backend, is_async=False, shared=False)) as db:
        Base.metadata.create_all(db.engine)
        with db.transaction() as session:
            with pytest.raises(NotFoundError) as missing:
                Resets(session).get("rst_S3cr3t")
            with pytest.raises(InvalidFilterError) as refused:
                Pins(session).get("8231x")
            with pytest.raises(NotFoundError) as missing_pin:
                Pins(session).get(8231)
    fake = FakeResets([ResetToken(token="rst_S3cr3t", account_id=1)])
    with pytest.raises(UniqueViolationError) as duplicate:
        fake.add(ResetToken(token="rst_S3cr3t", account_id=2))
    assert str(missing.value) == "no ResetToken with primary key ***"
    assert missing.value.ident == "rst_S3cr3t"  # for the program, which gave it
    assert str(refused.value) == "bad primary key (a sensitive field's: not shown)"
    assert str(missing_pin.value) == "no Pin with primary key ***"
    assert "S3cr3t" not in str(duplicate.value)
    with pytest.raises(NotFoundError, match=r"primary key 1$"):  # any other key is shown
        FakeVaults().get(1)


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
    assert _shows_no_secret(caught.value), "".join(traceback.format_exception(caught.value))


def test_a_load_of_a_taken_secret_key_leaves_it_out_of_the_printed_traceback(
    sql_backend: str, request: pytest.FixtureRequest
) -> None:
    # PostgreSQL's COPY quotes the key (DETAIL: Key (token)=(...) already exists) in the
    # driver's error, the cause a traceback prints under the dalkit error
    with Database(backend_url(request, sql_backend, is_async=False, shared=False)) as db:
        Base.metadata.create_all(db.engine)
        with db.transaction() as session:
            Resets(session).add(ResetToken(token=HASH, account_id=1))
        with pytest.raises(BulkLoadError) as caught, db.transaction() as session:
            Resets(session).bulk_insert([{"token": HASH, "account_id": 2}])
    assert _shows_no_secret(caught.value), "".join(traceback.format_exception(caught.value))
    assert isinstance(caught.value.__cause__, UniqueViolationError)
