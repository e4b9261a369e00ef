"""Conduit's settings, from the environment: the database URL (embedded SQLite unless
``DALKIT_DATABASE_URL`` is set), the query cache's Redis (``DALKIT_REDIS_URL``, else memory),
the JWT secret and lifetime, and the password hasher."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets

from argon2 import PasswordHasher
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

log = logging.getLogger("conduit")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///conduit.db"


@dataclasses.dataclass(frozen=True, repr=False)  # __repr__ below masks the password
class Settings:
    """``jwt_secret`` signs tokens and ``token_lifetime_s`` bounds them; ``secret_key``
    encrypts keyset cursors (dalkit's ``secret_key``). ``redis_url`` holds the query cache's
    entries (shared by every process); without it each process caches in memory.
    ``repr`` shows no secret: the database URL's password is masked, and neither the Redis
    URL (which may carry a password) nor the secrets appear."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = dataclasses.field(default=None, repr=False)
    jwt_secret: str = dataclasses.field(default="", repr=False)
    secret_key: str = dataclasses.field(default="", repr=False)
    token_lifetime_s: int = 7 * 24 * 3600
    hasher: PasswordHasher = dataclasses.field(default_factory=PasswordHasher)

    def __post_init__(self) -> None:
        if len(self.jwt_secret.encode()) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes (RFC 7518 for HS256)")
        if len(self.secret_key.encode()) < 16:
            raise ValueError("secret_key must be at least 16 bytes")

    def __repr__(self) -> str:
        # the generated repr, but with the database URL's password masked: settings get logged
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["database_url"] = _masked(self.database_url)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DALKIT_DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=os.environ.get("DALKIT_REDIS_URL") or None,
            jwt_secret=_secret("CONDUIT_JWT_SECRET", "tokens"),
            secret_key=_secret("DALKIT_SECRET_KEY", "keyset cursors"),
        )


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "***"  # unparsable, so where a password would be is unknown: show none of it


def _secret(variable: str, what: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        value = secrets.token_urlsafe(32)
        log.warning("%s is not set: %s stay valid until this process stops", variable, what)
    return value
