"""libpq's URL query options for asyncpg: the ones it has a spelling for are translated, the
others refused up front; and so are ``connect_args`` keys that ``asyncpg.connect()`` does not
take.

psycopg hands a URL's query to libpq, which knows ``sslmode``, ``connect_timeout``,
``application_name``, ``options`` and the rest; SQLAlchemy's asyncpg dialect passes the same query
to ``asyncpg.connect()`` as keyword arguments, which raised a raw TypeError at the first query.
For psycopg, only ``options`` holding a secret-looking setting moves to the connect arguments:
SQLAlchemy renders an engine's URL with its query whole (``str(engine.url)``, ``repr(engine)``).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL

from dalkit.config_urls import secret_options_moved
from dalkit.errors import ConfigurationError

__all__ = ["asyncpg_connect_args", "url_connect_args"]

# asyncpg.connect()'s own keywords (and the dialect's) a URL query may carry as they are
_NATIVE = frozenset(
    {
        "host",
        "port",
        "ssl",
        "direct_tls",
        "passfile",
        "service",
        "servicefile",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "prepared_statement_cache_size",
    }
)
# what SQLAlchemy's asyncpg dialect takes out of the connect arguments before asyncpg sees them
_DIALECT_ARGS = frozenset(
    {"async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func"}
)
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# one option of libpq's ``options``: "-c name=value", "-cname=value" or "--name=value"
_OPTION = re.compile(r"^(?:-c|--)(?P<name>[A-Za-z_][\w.-]*)=(?P<value>.*)$", re.DOTALL)


def _one(url: URL, key: str) -> str:
    value = url.query[key]
    if not isinstance(value, str):
        raise ConfigurationError(f"the URL option {key!r} is given more than once")
    return value


def _server_settings(options: str) -> dict[str, str]:
    """libpq's ``options`` (``-c name=value ...``, a space escaped by a backslash) as settings."""
    settings: dict[str, str] = {}
    words = [w.replace("\\ ", " ") for w in re.split(r"(?<!\\)\s+", options.strip()) if w]
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            i += 1
            word = "-c" + words[i]
        match = _OPTION.match(word)
        if match is None:
            raise ConfigurationError(
                "the URL option 'options' holds something other than -c name=value settings, "
                "which is all asyncpg can send"
            )
        settings[match["name"].replace("-", "_")] = match["value"]
        i += 1
    return settings


def url_connect_args(
    url: URL, connect_args: Mapping[str, Any] | None = None
) -> tuple[URL, dict[str, Any]]:
    """The options of ``url``'s query its driver takes as connect arguments, split off it:
    libpq's in asyncpg's spelling (`asyncpg_connect_args()`); for psycopg, ``options`` that
    hold a secret-looking server setting (``-c app.api_key=...``), which the engine's URL
    would otherwise show.

    Args:
        url: A URL with its driver (`dalkit.engine.build.resolve_url()`).
        connect_args: The config's connect arguments.

    Returns:
        The URL to build the engine on, and the connect arguments taken from it.

    Raises:
        ConfigurationError: See `asyncpg_connect_args()`.
    """
    if url.get_driver_name() == "asyncpg":
        return asyncpg_connect_args(url, connect_args)
    if url.get_backend_name() == "postgresql":
        return secret_options_moved(url)
    return url, {}


def asyncpg_connect_args(
    url: URL, connect_args: Mapping[str, Any] | None = None
) -> tuple[URL, dict[str, Any]]:
    """Split libpq's query options off an asyncpg URL, as asyncpg's connect arguments.

    Args:
        url: A ``postgresql+asyncpg`` URL.
        connect_args: The config's connect arguments, where the URL's secrets were moved
            (``sslpassword``, which asyncpg has no argument for, is refused there).

    Returns:
        The URL without them, and the connect arguments they mean: ``sslmode`` as ``ssl``,
        ``connect_timeout`` as ``timeout``, ``application_name`` and ``options`` (``-c``
        settings) in ``server_settings``.

    Raises:
        ConfigurationError: An option asyncpg has no spelling for (``gssencmode``,
            ``keepalives``...) or a malformed value; the error names the option only.
    """
    if connect_args and "sslpassword" in connect_args:  # (its value is never shown)
        raise ConfigurationError(
            "the URL option 'sslpassword' is not supported by asyncpg (AsyncDatabase's "
            "PostgreSQL driver); pass an ssl.SSLContext as connect_args={'ssl': ...}"
        )
    _check_connect_args(connect_args or {})
    args: dict[str, Any] = {}
    settings: dict[str, str] = {}
    taken = []
    for key in url.query:
        if key in _NATIVE:
            continue
        taken.append(key)
        value = _one(url, key)
        if key == "sslmode":
            if value not in _SSLMODES:
                raise ConfigurationError(
                    f"the URL option 'sslmode' must be one of {', '.join(sorted(_SSLMODES))}"
                )
            args["ssl"] = value
        elif key == "connect_timeout":
            try:
                args["timeout"] = float(value)
            except ValueError:
                raise ConfigurationError(
                    "the URL option 'connect_timeout' must be a number of seconds"
                ) from None
        elif key == "application_name":
            settings["application_name"] = value
        elif key == "options":
            settings = {**_server_settings(value), **settings}
        else:
            raise ConfigurationError(
                f"the URL option {key!r} is not supported by asyncpg (AsyncDatabase's "
                "PostgreSQL driver); remove it, or pass asyncpg's own argument in connect_args"
            )
    if settings:
        args["server_settings"] = settings
    return url.difference_update_query(taken), args


def _check_connect_args(connect_args: Mapping[str, Any]) -> None:
    """Refuse a key ``asyncpg.connect()`` would reject with a raw TypeError at the first
    connection: named, its value never shown (``connect_args`` holds secrets)."""
    if "async_creator_fn" in connect_args:  # the application's own connect: its own arguments
        return
    taken = _asyncpg_arguments()
    unknown = sorted(str(key) for key in connect_args if key not in taken)
    if unknown:
        raise ConfigurationError(
            f"connect_args {unknown[0]!r} is not an argument of asyncpg.connect() "
            "(AsyncDatabase's PostgreSQL driver); remove it or use asyncpg's spelling "
            "(sslmode: 'ssl', connect_timeout: 'timeout', options: 'server_settings')"
        )


@functools.cache
def _asyncpg_arguments() -> frozenset[str]:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]  # AsyncDatabase on PostgreSQL

    return frozenset(inspect.signature(asyncpg.connect).parameters) | _DIALECT_ARGS
