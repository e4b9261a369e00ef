"""How a config reads a database URL: libpq's multi-host spelling (``h1:5432,h2:5432``), an
unencoded ``@`` in the password, and a malformed URL as a ConfigurationError that does not
repeat it (it would show the password).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dalkit.errors import ConfigurationError
from dalkit.secret_names import MASK, is_secret_name, masked_text, text_secrets

__all__ = [
    "is_multi_host",
    "masked_options",
    "masked_settings",
    "parse_url",
    "secret_options_moved",
    "split_hosts",
]

# a server setting in libpq's options: -c name=value, -cname=value or --name=value, where a
# backslash escapes a space in the value
_SETTING = re.compile(r"(?P<head>(?:-c\s*|--)(?P<name>[\w.-]+)=)(?P<value>(?:\\.|\S)+)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# scheme://userinfo@host:port,host:port/rest: SQLAlchemy only parses the ?host= spelling. The
# hosts end the authority (a "/", a "?" or the end): a comma in a password is no host list
_MULTI_HOST = re.compile(
    r"^(?P<head>[^:/]+://(?:[^@/]*@)?)(?P<hosts>[^/?@]*,[^/?@]*)(?P<tail>(?:[/?].*)?)$"
)


def _encode_userinfo(url: str) -> str:
    """``url`` with an unencoded ``@`` in its password percent-encoded, as libpq reads it.

    SQLAlchemy splits the userinfo at the first ``@``, so ``app:p@ss@host`` would make ``ss@host``
    the host, and show it; libpq and urllib split at the last one, which is what users meant.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    rest = url[scheme.end() :]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc = rest[:end]
    if netloc.count("@") < 2:
        return url
    userinfo, _, host = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    encoded = quote(unquote(user), safe="") + colon + quote(unquote(password), safe="")
    return f"{scheme.group()}{encoded}@{host}{rest[end:]}"


def split_hosts(url: str) -> str:
    """A libpq-style multi-host URL in SQLAlchemy's spelling, which psycopg and asyncpg both
    turn into multi-host connections; any other URL as it is.

    Args:
        url: A URL, maybe ``postgresql://u:p@h1:5432,h2:5432/app?...``.

    Returns:
        ``postgresql://u:p@/app?host=h1:5432&host=h2:5432&...`` for a multi-host URL.

    Examples:
        ```python
        print(split_hosts("postgresql://u@h1:5432,h2:5432/app"))
        #> postgresql://u@/app?host=h1:5432&host=h2:5432
        ```
    """
    match = _MULTI_HOST.match(url)
    if match is None:
        return url
    hosts = [part for part in match["hosts"].split(",") if part]
    path, _, query = match["tail"].partition("?")
    params = "&".join(f"host={host}" for host in hosts)
    return f"{match['head']}{path or '/'}?{params}{'&' + query if query else ''}"


def is_multi_host(url: URL) -> bool:
    """Whether ``url`` names several hosts (libpq's failover), in either spelling.

    Args:
        url: A parsed URL.

    Returns:
        True for ``?host=h1&host=h2`` (what `split_hosts()` makes) or ``?host=h1,h2``.
    """
    hosts = url.query.get("host")
    if isinstance(hosts, tuple):
        return len(hosts) > 1 or any("," in host for host in hosts)
    return isinstance(hosts, str) and "," in hosts


def parse_url(url: str | URL) -> URL:
    """``url`` parsed as a config parses it: a multi-host URL (`split_hosts()`), an ``@`` in
    the password; secrets are left in place (a config moves them out of the query).

    Args:
        url: A URL.

    Returns:
        The parsed URL.

    Raises:
        ConfigurationError: ``url`` is malformed (the message does not repeat it).
    """
    try:
        return make_url(split_hosts(_encode_userinfo(url)) if isinstance(url, str) else url)
    except (ArgumentError, ValueError):
        # make_url's message repeats the whole string, password included: chain nothing
        raise ConfigurationError(
            "malformed database URL; expected dialect[+driver]://user:password@host:port/database "
            "or sqlite:///path/to/file.db"
        ) from None


def masked_options(url: URL) -> tuple[URL, list[str]]:
    """``url`` with the value of each secret-looking server setting in its ``options``
    (``-c app.api_key=...``) as ``***``, and the secrets inside another's value (``-c
    app.upstream=password=...``) too, and those values.

    Args:
        url: A database URL.

    Returns:
        The URL to show, and the values it no longer shows.
    """
    options = url.query.get("options")
    if options is None:
        return url, []
    found: list[str] = []
    shown = []
    for option in (options,) if isinstance(options, str) else options:
        shown.append(masked_settings(option, found))
    return url.update_query_dict({"options": shown if len(shown) > 1 else shown[0]}), found


def secret_options_moved(url: URL) -> tuple[URL, dict[str, Any]]:
    """``url`` without its ``options`` when they hold a secret-looking server setting, and
    those options as a connect argument: libpq takes them from either, and SQLAlchemy's own
    rendering of an engine's URL (``str(engine.url)``, ``repr(engine)``) shows its query whole.

    Args:
        url: A database URL for a libpq driver (psycopg).

    Returns:
        The URL to build the engine on, and the connect arguments taken from it.
    """
    if not masked_options(url)[1]:
        return url, {}
    return url.difference_update_query(["options"]), {"options": url.query["options"]}


def masked_settings(options: str, found: list[str]) -> str:
    """libpq's ``options`` (``-c name=value ...``) with each secret-looking setting's value as
    ``***``, and the secrets inside another setting's value (``-c app.upstream=password=...``,
    a URL's password: `masked_text`) masked too.

    Args:
        options: The options.
        found: Where the values masked are added.

    Returns:
        The options to show.
    """

    def mask(match: re.Match[str]) -> str:
        if not is_secret_name(match["name"]):
            inner = text_secrets(match["value"])
            if not inner:
                return match[0]
            found.extend(inner)
            return match["head"] + masked_text(match["value"])
        found.append(match["value"])
        return match["head"] + MASK

    return _SETTING.sub(mask, options)
