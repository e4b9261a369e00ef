"""The audit log keeps a secret's values out unasked: a column named like one (by the rule the
logs mask values by) or marked ``info={"sensitive": True}`` is recorded as changed, redacted;
``info={"sensitive": False}`` records a column's values whatever its name."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Audited, Database, UnitOfWork, audit
from dalkit.tables import audit_log


class Base(DeclarativeBase):
    pass


class Client(Audited, Base):
    __tablename__ = "audit_secret_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    api_token: Mapped[str] = mapped_column(sa.String(100))
    password_hash: Mapped[str] = mapped_column(sa.String(100))
    recovery: Mapped[str] = mapped_column(sa.String(100), info={"sensitive": True})
    pin_length: Mapped[int] = mapped_column(info={"sensitive": False})


def test_a_secret_s_column_is_recorded_redacted_unasked(db: Database) -> None:
    db.create_all(Base.metadata)
    secrets = ("tok-S3cr3t", "hash-S3cr3t", "words-S3cr3t")
    with UnitOfWork(db) as uow:
        uow.session.add(
            Client(
                id=1,
                name="a",
                api_token=secrets[0],
                password_hash=secrets[1],
                recovery=secrets[2],
                pin_length=4,
            )
        )
    with UnitOfWork(db) as uow:  # a session's UPDATE statement: its own path to the log
        uow.session.execute(
            sa.update(Client).where(Client.id == 1).values(api_token="tok-N3w", pin_length=6)
        )
    with db.transaction(read_only=True) as session:
        raw = session.execute(sa.select(audit_log.c.changes)).scalars().all()
        created, updated = audit.history(session, Client, 1)
    assert not any(s in str(changes) or "N3w" in str(changes) for changes in raw for s in secrets)
    assert created.changes == {
        "id": 1,
        "name": "a",
        "api_token": audit.REDACTED,
        "password_hash": audit.REDACTED,
        "recovery": audit.REDACTED,
        "pin_length": 4,
    }
    assert updated.changes == {
        "api_token": {"old": audit.REDACTED, "new": audit.REDACTED},
        "pin_length": {"old": 4, "new": 6},
    }
