"""RedisConfig: what a RedisManager is built from: a URL, keyword options or the environment.

The password in the URL is shown nowhere (nor a user part written alone, which may be one), nor
any query option named like a secret
(``ssl_password``, by `dalkit.secret_names`), nor a secret inside another option's value (a
URL's password): reprs, ``str()`` and errors use `safe_url`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import (
    SplitResult,
    parse_qsl,
    quote,
    unquote,
    unquote_plus,
    urlsplit,
    urlunsplit,
)

from dalkit.config_checks import BOOL, INT, NUMBER, OptionType, check_types, check_wait
from dalkit.config_env import options_from_env
from dalkit.errors import ConfigurationError
from dalkit.secret_names import MASK, is_secret_name, masked_repr, masked_text, text_secrets

__all__ = ["DEFAULT_REDIS_URL", "URL_ENV", "RedisConfig", "require_redis"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
URL_ENV = "DALKIT_REDIS_URL"

_ENV_PREFIX = "DALKIT_REDIS_"
_SCHEMES = ("redis", "rediss", "unix")
_OPTION_TYPES = {
    "max_connections": INT,
    "socket_timeout_s": NUMBER._replace(optional=True),
    "socket_connect_timeout_s": NUMBER,
    "health_check_interval_s": INT,
    "client_name": OptionType("a string", lambda value: isinstance(value, str), optional=True),
    "decode_responses": BOOL,
}


def require_redis() -> None:
    """Raise ConfigurationError naming the extra when redis-py is not installed."""
    if importlib.util.find_spec("redis") is None:
        raise ConfigurationError(
            "redis-py is not installed; install it with pip install 'dalkit[redis]'"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class RedisConfig:
    """Connection and pool settings for one Redis server.

    ``health_check_interval_s`` pings a connection idle that long before reusing it, like
    ``pool_pre_ping``; ``client_name`` is what ``CLIENT LIST`` shows for dalkit's connections.
    """

    url: str
    max_connections: int = 50
    socket_timeout_s: float | None = 5.0
    socket_connect_timeout_s: float = 5.0
    health_check_interval_s: int = 30
    client_name: str | None = "dalkit"
    decode_responses: bool = False

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigurationError(_malformed()) from None
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(_malformed())
        _path_database(parts)  # redis-py ignores a path that is no number: DB 0, silently
        # before any comparison: a str would raise a raw TypeError, a True pass as 1, and a
        # "no" for decode_responses turn it on
        values = {name: getattr(self, name) for name in _OPTION_TYPES}
        check_types(values, _OPTION_TYPES)
        if self.max_connections < 1:
            raise ConfigurationError("max_connections must be a positive integer")
        for name in ("socket_timeout_s", "socket_connect_timeout_s", "health_check_interval_s"):
            # NaN, infinities and years failed at the first command with a raw ValueError or
            # OverflowError from the socket module
            check_wait(name, values[name])
        if self.socket_connect_timeout_s <= 0 or (
            self.socket_timeout_s is not None and self.socket_timeout_s <= 0
        ):
            raise ConfigurationError("socket timeouts must be positive")
        if self.health_check_interval_s < 0:
            raise ConfigurationError("health_check_interval_s must be zero (off) or positive")

    @classmethod
    def coerce(cls, url_or_config: str | RedisConfig, **options: Any) -> RedisConfig:
        """A config from a URL or an existing config, with ``options`` laid over it."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls) if f.name != "url"}
        if unknown:
            raise ConfigurationError(f"unknown Redis option(s): {', '.join(sorted(unknown))}")
        if isinstance(url_or_config, RedisConfig):
            return dataclasses.replace(url_or_config, **options) if options else url_or_config
        return cls(url_or_config, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> RedisConfig:
        """The URL from ``DALKIT_REDIS_URL`` (else ``redis://localhost:6379/0``) and options
        from ``DALKIT_REDIS_<OPTION>`` (``MAX_CONNECTIONS``, ``SOCKET_TIMEOUT_S``, ...).

        Args:
            environ: The variables to read (default: ``os.environ``).
            **options: Fields to set, over what the environment says.

        Returns:
            The checked config.

        Raises:
            ConfigurationError: A ``DALKIT_REDIS_*`` variable names no option, or a value does
                not parse or is out of range.
        """
        env = os.environ if environ is None else environ
        from_env = options_from_env(env, _ENV_PREFIX, cls, ("url",))
        return cls.coerce(env.get(URL_ENV) or DEFAULT_REDIS_URL, **{**from_env, **options})

    @property
    def safe_url(self) -> str:
        """The URL with its password (in the user part or the query) and each query option
        named like a secret (``ssl_password``) replaced by ``***``."""
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:{MASK}@{host}"
        elif _lone_user(parts):
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        query = "&".join(
            f"{key}={MASK}" if is_secret_name(unquote_plus(key)) else f"{key}={_shown(value)}"
            for key, value in _raw_query(parts.query)
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    @property
    def database(self) -> str | None:
        """The database number the URL selects, as redis-py reads it (``None`` for the default)."""
        parts = urlsplit(self.url)
        from_query = dict(parse_qsl(parts.query)).get("db")
        if from_query is not None:
            return from_query
        return _path_database(parts)

    def scrub(self, text: str) -> str:
        """``text`` with the password (and each secret query option) removed, in both its raw
        and its URL-encoded forms."""
        for secret in self._secrets():
            text = text.replace(secret, MASK)
        return text

    def _secrets(self) -> list[str]:
        # each as written in the URL and as redis-py decodes it (unquote in the user part,
        # parse_qs's unquote_plus in the query)
        parts = urlsplit(self.url)
        found = {parts.password or "", unquote(parts.password or "")}
        if _lone_user(parts):
            found |= {parts.username or "", unquote(parts.username or "")}
        for key, value in _raw_query(parts.query):
            if is_secret_name(unquote_plus(key)):
                found |= {value, unquote_plus(value)}
            else:  # a URL's password inside the value (a sentinel's URL)
                for secret in text_secrets(unquote_plus(value)):
                    found |= {secret, unquote(secret), quote(secret, safe="")}
        # longest first, so a password containing another never leaves a fragment behind
        return sorted(found - {""}, key=len, reverse=True)

    def pool_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's ``ConnectionPool.from_url``."""
        return {
            "max_connections": self.max_connections,
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_connect_timeout_s,
            "health_check_interval": self.health_check_interval_s,
            "client_name": self.client_name,
            "decode_responses": self.decode_responses,
        }

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={masked_repr(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.name != "url" and getattr(self, f.name) != f.default
        )
        return f"RedisConfig(url={self.safe_url!r}{', ' if shown else ''}{shown})"

    __str__ = __repr__


def _lone_user(parts: SplitResult) -> bool:
    """Whether the URL's user part has no password after it (``redis://s3cret@host``): redis-py
    sends it as the username, but many write their password there (``requirepass`` has no
    user), so it is shown and quoted as a password is: as ``***``."""
    return parts.password is None and bool(parts.username)


def _shown(value: str) -> str:
    """A query value as `RedisConfig.safe_url` shows it: as written, unless it holds a secret
    of its own under its innocent name (a sentinel's URL with a password), then decoded and
    masked."""
    decoded = unquote_plus(value)
    masked = masked_text(decoded)
    return value if masked == decoded else quote(masked, safe=":/@*=")


def _path_database(parts: SplitResult) -> str | None:
    """The database number in a redis:// URL's path (None without one); a path that is not one
    (``redis://host/abc``, ``/0/1``) is a ConfigurationError."""
    path = unquote(parts.path).strip("/")
    if parts.scheme == "unix" or not path:
        return None
    if not path.isascii() or not path.isdigit():
        raise ConfigurationError(
            "the path of a Redis URL is its database number (redis://host:6379/0); "
            f"{path!r} is not one"
        )
    return path


def _raw_query(query: str) -> list[tuple[str, str]]:
    """``key=value`` pairs exactly as written: the masks must match the URL's own spelling."""
    return [(key, value) for key, _, value in (p.partition("=") for p in query.split("&") if p)]


def _malformed() -> str:
    # the URL itself is left out: it may carry the password
    return (
        "malformed Redis URL; expected redis://[user:password@]host:port/db, rediss://... "
        "or unix:///path/to/socket"
    )
