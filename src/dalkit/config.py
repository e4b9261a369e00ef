"""DatabaseConfig: what a Database is built from: a URL, keyword options or the environment.

Secrets (the URL's password, a secret-looking key in its query or in ``connect_args``, a
secret-looking server setting in its ``options``, ``secret_key``, and a secret inside any text
value, such as a DSN's password under an innocent key) are shown nowhere: reprs, errors and
logs use `safe_url`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.engine import URL

from dalkit.config_checks import check_options
from dalkit.config_env import options_from_env
from dalkit.config_urls import (
    is_multi_host,
    masked_options,
    masked_settings,
    parse_url,
    split_hosts,
)
from dalkit.errors import ConfigurationError
from dalkit.secret_names import (
    MASK,
    is_secret_name,
    masked_text,
    masked_values,
    secret_values,
    text_secrets,
)

__all__ = [
    "DEFAULT_URL",
    "SECRET_KEY_ENV",
    "URL_ENV",
    "DatabaseConfig",
    "InitHook",
    "is_memory_sqlite",
    "is_multi_host",
    "is_secret",
    "parse_url",
    "split_hosts",
]

#: An example URL for help texts; dalkit never connects to it unasked (from_env requires a URL).
DEFAULT_URL = "sqlite:///./dalkit.db"
URL_ENV = "DALKIT_DATABASE_URL"
SECRET_KEY_ENV = "DALKIT_SECRET_KEY"

#: what cursor signing (dalkit.query.cursor) needs of ``secret_key``, checked when configured
MIN_SECRET_KEY_BYTES = 16

#: Called with the driver's own connection (psycopg, asyncpg, sqlite3, aiosqlite) each time the
#: pool opens one: register type codecs, set session variables. May be a coroutine function
#: under the async API.
InitHook = Callable[[Any], "Awaitable[None] | None"]

_ENV_PREFIX = "DALKIT_DATABASE_"
# options that cannot come from a string: code (init) or a mapping (connect_args)
_NOT_FROM_ENV = frozenset({"url", "connect_args", "init"})


def is_secret(name: str) -> bool:
    """Whether a URL query key or connect argument named ``name`` holds a secret: the one rule
    of `dalkit.secret_names`, which the query layer and the logs follow too."""
    return is_secret_name(name)


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (which lives in its connection)."""
    if url.get_backend_name() != "sqlite":
        return False
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


@dataclasses.dataclass(frozen=True, repr=False)
class DatabaseConfig:
    """Connection and pool settings for one database; the keyword options of
    [`Database`][dalkit.Database]. Every secret in it is shown nowhere (reprs, errors, logs).

    Attributes:
        url: The database URL; a driver is chosen when it names none.
        pool_size: Connections kept open in the pool (SQLAlchemy's ``pool_size``).
        max_overflow: Connections opened beyond ``pool_size`` under load.
        pool_timeout: Seconds a checkout waits for a connection before `PoolTimeoutError`.
        pool_recycle: Seconds after which a connection is replaced.
        pool_pre_ping: Check that a connection is alive before it is used again.
        echo: Log every statement (SQLAlchemy's ``echo``).
        connect_args: Extra arguments of the driver's ``connect()``; secrets in the URL's
            query string are moved here.
        connect_timeout_s: Seconds a new connection may take.
        statement_timeout_ms: PostgreSQL's ``statement_timeout`` (``None``: the server's).
        application_name: The name PostgreSQL shows for the connections.
        leak_threshold_s: Log a warning with the checkout stack for any connection held
            longer (``None``: off).
        sqlite_busy_timeout_ms: How long SQLite waits for a lock before `DatabaseBusyError`.
        init: Called with each new driver connection (may be a coroutine function).
        secret_key: Keys what dalkit hands out (cursors); at least 16 bytes.
        min_size: Connections opened by the first checkout and topped up after losses.
        max_queries: Replace a connection before its next checkout once it ran this many
            statements (``None``: never).
        max_idle_s: Replace a connection that sat idle this long (``None``: never).
        pool_log_interval_s: Log the pool statistics at INFO on ``dalkit.pool`` this often.
        nplusone: N+1 detection: ``"off"``, ``"warn"`` or ``"raise"`` (``None``: the process
            default, ``"warn"`` under the pytest plugin).
        nplusone_threshold: Identical statements in one transaction that count as an N+1.
        slow_query_ms: Log statements slower than this on ``dalkit.slow_query``.
        query_stats: Keep per-statement-shape statistics (``db.query_stats()``).
        query_stats_size: How many statement shapes those statistics keep (an LRU).

    Raises:
        ConfigurationError: When an option is of the wrong type or out of range (checked on
            construction, by `dalkit.config_checks`).
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
    secret_key: str | None = None
    min_size: int = 0
    max_queries: int | None = None
    max_idle_s: float | None = None
    pool_log_interval_s: float | None = None
    #: query observability (dalkit.observe): N+1 detection ("off", "warn", "raise"; None takes
    #: the process default, "warn" under the pytest plugin), the slow-query log threshold, and
    #: per-statement-shape statistics kept in a bounded LRU
    nplusone: str | None = None
    nplusone_threshold: int = 10
    slow_query_ms: float | None = None
    query_stats: bool = True
    query_stats_size: int = 500

    def __post_init__(self) -> None:
        # before anything uses the options: a str where a number belongs would otherwise
        # surface as a raw TypeError here, or be accepted and fail at the first query
        check_options(self)
        url = parse_url(self.url)
        # a secret in the query string would be rendered by every str(url), SQLAlchemy's
        # own included: it goes to connect_args, which the dialects merge in just the same
        moved = {key: value for key, value in url.query.items() if is_secret(key)}
        if moved:
            url = url.difference_update_query(moved)
            object.__setattr__(self, "connect_args", {**moved, **self.connect_args})
        object.__setattr__(self, "url", url)
        if is_memory_sqlite(self.url) and (self.max_queries or self.max_idle_s):
            raise ConfigurationError(
                "max_queries and max_idle_s would replace the one connection that holds an "
                "in-memory SQLite database, and the data with it; use a file database"
            )
        if self.secret_key is not None and len(self.secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            # the value is never shown: it is a secret
            raise ConfigurationError(
                f"secret_key must be at least {MIN_SECRET_KEY_BYTES} bytes; use None for no key"
            )

    @classmethod
    def from_url(cls, url: str | URL, **options: Any) -> DatabaseConfig:
        """A config for ``url``.

        Args:
            url: The database URL.
            **options: Any other field of this class.

        Returns:
            The checked config.

        Raises:
            ConfigurationError: For an option this class does not have, or a bad value.
        """
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigurationError(f"unknown database option(s): {', '.join(sorted(unknown))}")
        return cls(url=parse_url(url), **options)

    @classmethod
    def coerce(cls, url_or_config: str | URL | DatabaseConfig, **options: Any) -> DatabaseConfig:
        """A config from a URL or an existing config, with ``options`` laid over it.

        Args:
            url_or_config: A URL, or a config to start from.
            **options: Fields to set.

        Returns:
            ``url_or_config`` itself when it is a config and no option is given, else a new one.

        Raises:
            ConfigurationError: For an unknown option or a bad value.
        """
        if isinstance(url_or_config, DatabaseConfig):
            if not options:
                return url_or_config
            current = {f.name: getattr(url_or_config, f.name) for f in dataclasses.fields(cls)}
            return cls.from_url(**{**current, **options})
        return cls.from_url(url_or_config, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> DatabaseConfig:
        """Read ``DALKIT_DATABASE_URL`` and ``DALKIT_DATABASE_<OPTION>`` (``POOL_SIZE``, ...),
        and ``DALKIT_SECRET_KEY``.

        Keyword options win over the environment. A typo must not silently fall back to a
        default, hence the errors below.

        Args:
            environ: The variables to read (default: ``os.environ``).
            **options: Fields to set, over what the environment says.

        Returns:
            The checked config.

        Raises:
            ConfigurationError: When the URL is missing, a ``DALKIT_DATABASE_*`` variable names
                no option, or a value does not parse.
        """
        env = os.environ if environ is None else environ
        from_env: dict[str, Any] = {}
        if env.get(SECRET_KEY_ENV):
            from_env["secret_key"] = env[SECRET_KEY_ENV]
        from_env.update(options_from_env(env, _ENV_PREFIX, cls, _NOT_FROM_ENV))
        url = env.get(URL_ENV)
        if not url:
            raise ConfigurationError(
                f"{URL_ENV} is not set: set it to the database to use, such as "
                "postgresql://user:password@host/dbname or sqlite:///path/to/file.db"
            )
        return cls.from_url(url, **{**from_env, **options})

    @property
    def safe_url(self) -> str:
        """The URL with its password (and a secret-looking setting in its ``options``, ``-c
        app.api_key=...``) replaced by ``***``: the only form dalkit ever shows."""
        url = masked_options(self.url)[0]
        # a query value may hold a secret under an innocent name: a URL's password, a DSN's
        query = {
            key: masked_text(value) if isinstance(value, str) else tuple(map(masked_text, value))
            for key, value in url.query.items()
        }
        shown = url.set(query=query).render_as_string(hide_password=True)
        return shown.replace("%2A%2A%2A", MASK)  # a masked setting, as the password reads

    @property
    def backend(self) -> str:
        """``"postgresql"``, ``"sqlite"``, ...: the dialect without its driver."""
        return self.url.get_backend_name()

    @property
    def secrets(self) -> list[str]:
        """Every secret this config holds (password, connect-argument secrets, secret_key)."""
        settings = masked_options(self.url)[1]
        if isinstance(options := self.connect_args.get("options"), str):
            masked_settings(options, settings)
        found = [self.url.password, self.secret_key, *settings, *secret_values(self.connect_args)]
        # and those inside a text of an innocent name: a DSN's password, a URL's
        texts = [*_texts(self.connect_args), *_texts(dict(self.url.query)), self.application_name]
        found += [secret for text in texts if text for secret in text_secrets(text)]
        return [str(value) for value in found if value]

    def scrub(self, text: str) -> str:
        """``text`` with every secret removed, for messages built from driver errors.

        Args:
            text: Any text, such as a driver's error message.

        Returns:
            The text with each secret of this config replaced by ``***``.
        """
        # longest first, so that a secret containing another is replaced whole
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={self._shown(f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name not in ("url", "init") and not _is_default(f, getattr(self, f.name))
        )
        return f"DatabaseConfig(url={self.safe_url!r}{', ' if shown else ''}{shown})"

    def _shown(self, name: str) -> Any:
        value = getattr(self, name)
        if name == "secret_key":
            return MASK
        if name == "connect_args":
            shown = masked_values(value)
            if isinstance(options := shown.get("options"), str):
                shown["options"] = masked_settings(options, [])
            return shown
        # a text under an innocent name may hold a secret (application_name="postgresql://...")
        return masked_text(value) if isinstance(value, str) else value

    __str__ = __repr__


def _texts(mapping: Mapping[Any, Any]) -> list[str]:
    """The texts ``mapping`` holds, in the mappings and tuples it holds too."""
    found: list[str] = []
    for value in mapping.values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            found += _texts(value)
        elif isinstance(value, tuple):
            found += [item for item in value if isinstance(item, str)]
    return found


def _is_default(field: dataclasses.Field[Any], value: Any) -> bool:
    if field.default_factory is not dataclasses.MISSING:
        return bool(value == field.default_factory())
    return bool(value == field.default)
