"""DatabaseConfig: what a Database is built from: a URL, keyword options or the environment.

The password in the URL is kept only inside a SQLAlchemy ``URL`` and shown nowhere: reprs,
``str()``, errors and logs all use :attr:`DatabaseConfig.safe_url`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dalkit.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "DatabaseConfig", "InitHook"]

DEFAULT_URL = "sqlite:///./dalkit.db"

#: Called with the driver's own connection (psycopg, asyncpg, sqlite3, aiosqlite) each time the
#: pool opens one: register type codecs, set session variables. May be a coroutine function
#: under the async API.
InitHook = Callable[[Any], "Awaitable[None] | None"]

_ENV_PREFIX = "DALKIT_DATABASE_"


def _parse_url(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        # make_url's message repeats the whole string, password included: chain nothing
        raise ConfigurationError(
            "malformed database URL; expected dialect[+driver]://user:password@host:port/database "
            "or sqlite:///path/to/file.db"
        ) from None


@dataclasses.dataclass(frozen=True, repr=False)
class DatabaseConfig:
    """Connection and pool settings for one database.

    ``pool_*`` settings mean what they mean in SQLAlchemy; ``leak_threshold_s`` logs a warning
    with the checkout stack for any connection held longer (off when ``None``).
    """

    url: URL
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = 1800
    pool_pre_ping: bool = True
    echo: bool = False
    connect_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    connect_timeout_s: float = 10.0
    statement_timeout_ms: int | None = None
    application_name: str | None = "dalkit"
    leak_threshold_s: float | None = None
    sqlite_busy_timeout_ms: int = 5000
    init: InitHook | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _parse_url(self.url))
        for name in ("pool_size", "max_overflow"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be a non-negative integer")
        if self.pool_timeout <= 0 or self.connect_timeout_s <= 0:
            raise ConfigurationError("pool_timeout and connect_timeout_s must be positive")
        if self.leak_threshold_s is not None and self.leak_threshold_s <= 0:
            raise ConfigurationError("leak_threshold_s must be positive, or None to turn it off")
        if self.statement_timeout_ms is not None and self.statement_timeout_ms < 0:
            raise ConfigurationError("statement_timeout_ms must be zero or positive")

    @classmethod
    def from_url(cls, url: str | URL, **options: Any) -> DatabaseConfig:
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigurationError(f"unknown database option(s): {', '.join(sorted(unknown))}")
        return cls(url=_parse_url(url), **options)

    @classmethod
    def coerce(cls, url_or_config: str | URL | DatabaseConfig, **options: Any) -> DatabaseConfig:
        """A config from a URL or an existing config, with ``options`` laid over it."""
        if isinstance(url_or_config, DatabaseConfig):
            if not options:
                return url_or_config
            current = {f.name: getattr(url_or_config, f.name) for f in dataclasses.fields(cls)}
            return cls.from_url(**{**current, **options})
        return cls.from_url(url_or_config, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> DatabaseConfig:
        """Read ``DALKIT_DATABASE_URL`` and ``DALKIT_DATABASE_<OPTION>`` (``POOL_SIZE``, ...).

        Keyword options win over the environment.
        """
        env = os.environ if environ is None else environ
        from_env: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(_ENV_PREFIX + field.name.upper())
            if raw is None or field.name in ("url", "connect_args", "init"):
                continue
            from_env[field.name] = _coerce_env(field.name, raw, field.type)
        return cls.from_url(env.get(_ENV_PREFIX + "URL", DEFAULT_URL), **{**from_env, **options})

    @property
    def safe_url(self) -> str:
        """The URL with its password replaced by ``***``: the only form dalkit ever shows."""
        return self.url.render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        """``"postgresql"``, ``"sqlite"``, ...: the dialect without its driver."""
        return self.url.get_backend_name()

    def scrub(self, text: str) -> str:
        """``text`` with the password removed, for messages built from driver errors."""
        password = self.url.password
        return text.replace(str(password), "***") if password else text

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name not in ("url", "init") and getattr(self, f.name) != f.default
        )
        return f"DatabaseConfig(url={self.safe_url!r}{', ' if shown else ''}{shown})"

    __str__ = __repr__


def _coerce_env(name: str, raw: str, annotation: object) -> Any:
    text = str(annotation)
    try:
        if raw.strip().lower() in ("", "none") and "None" in text:
            return None
        if text.startswith("bool"):
            if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigurationError(
            f"environment variable {_ENV_PREFIX}{name.upper()} has an invalid value {raw!r}"
        ) from None
    return raw
