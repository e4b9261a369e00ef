"""Models and events of the unit-of-work tests: users with profiles (audited, recording events)
and accounts, on their own metadata; ``dalkit.metadata`` comes with ``db.create_all``."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import Audited, DomainEvent, HasEvents
from dalkit.outbox.messages import event_type


class Base(DeclarativeBase):
    pass


class User(Audited, HasEvents, Base):
    __tablename__ = "uow_users"
    audit_exclude = frozenset({"hashed_password"})
    audit_redact = frozenset({"phone"})

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    hashed_password: Mapped[str] = mapped_column(sa.String(200), default="")
    phone: Mapped[str | None] = mapped_column(sa.String(40), default=None)
    profile: Mapped[Profile | None] = relationship(back_populates="user")


class Profile(Audited, Base):
    __tablename__ = "uow_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("uow_users.id"), unique=True)
    bio: Mapped[str] = mapped_column(sa.String(200), default="")
    user: Mapped[User] = relationship(back_populates="profile")


class Account(Audited, HasEvents, Base):
    __tablename__ = "uow_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(50))
    balance: Mapped[int] = mapped_column(default=0)


class Link(Audited, Base):
    """Audited, with a composite natural key longer than the log's ``entity_id`` keeps."""

    __tablename__ = "uow_links"

    source: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    target: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(50), default="")


class Note(Base):
    """Not audited: its writes leave no audit rows."""

    __tablename__ = "uow_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(200))


@event_type("test.user_registered", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class UserRegistered(DomainEvent):
    email: str


@event_type("test.user_renamed", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class UserRenamed(DomainEvent):
    user_id: int
    name: str


@event_type("test.account_credited", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountCredited(DomainEvent):
    account_id: int
    amount: int


@event_type("test.note_tagged", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class NoteTagged(DomainEvent):
    """Tags of any type: what the outbox can store of them depends on the values."""

    tags: list[object]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unregistered(DomainEvent):
    """Not registered: the outbox refuses it."""

    value: int = 0
