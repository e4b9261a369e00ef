"""The one rule for which names hold secrets: the URL query keys and connect arguments that
`dalkit.config` masks, the columns `dalkit.query.fields` keeps out of default allow-lists and
`dalkit.audit` records redacted, and the parameters and columns whose values the slow-query log
and EXPLAIN plans (`dalkit.observe`) mask.

A name is a secret's when it holds one of the unmistakable words anywhere (``password``,
``passwd``, ``passphrase``, ``passcode``, ``secret``, ``token``, ``credential``, ``api_key``,
``private_key``, ``access_key``, ``signing_key``, ``encryption_key``: ``sslpassword``,
``ApiToken``, ``client_SECRET``), or one of the short words as a word of its own, between
characters that are no letters (``pass``, ``pwd``, ``pw``, ``auth``, ``authorization``, ``salt``,
``hash``, ``hashed``, ``pin``, ``otp``, maybe plural: ``db_pass``, ``auth_header``,
``password_salt``, ``user.pin``). So ``author``, ``authority``, ``secretary``, ``passenger``,
``passfile`` (a path), ``spin``, ``shipping`` and ``hashtag`` name no secret; neither do short
words glued into a camelCase name (``authHeader``: write ``auth_header``, or mark the column
``info={"sensitive": True}``).

A value under an innocent name may hold a secret of its own: a URL's password
(``postgresql://u:pw@h/db``, ``redis://:pw@h``, and a Redis URL's user part written alone,
``redis://pw@h``, where many put the password) or a secret-named key of a URL's query or a
libpq key/value DSN (``host=h password=pw``); `masked_text` masks those, and the maskers here
apply it to every text they show.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MASK",
    "SECRET_NAMES",
    "is_secret_name",
    "is_sensitive",
    "masked_repr",
    "masked_text",
    "masked_values",
    "secret_values",
    "text_secrets",
]

#: what a secret is shown as
MASK = "***"

_ANYWHERE = (
    r"pass(?:word|wd|phrase|code)|secret(?!ar[iy])|token|credential"
    r"|(?:api|private|access|signing|encryption)_?key"
)
_WORDS = r"(?<![a-z])(?:pass|pwd|pw|auth|authorization|salt|hash|hashed|pin|otp)s?(?![a-z])"
#: searched in a name, or in SQL text for the names in it; its pattern is lower-case ASCII, so
#: that it serves text folded to lower case without ``re.IGNORECASE`` too
SECRET_NAMES = re.compile(f"{_ANYWHERE}|{_WORDS}", re.IGNORECASE)


# a URL's user info, up to its last "@" before the host: a password may hold an unencoded "@"
_USERINFO = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*):(?P<password>[^/?#\s]*)@", re.IGNORECASE
)
# a Redis URL's user part with no password after it (redis://s3cret@host): redis-py sends it as
# the username, but it is where many write the password (a requirepass server has no users);
# the user part, as a password, may hold an unencoded "@": up to the last one before the host
_REDIS_LONE_USER = re.compile(r"(?P<head>\brediss?://)(?P<password>[^:/?#\s]+)@", re.IGNORECASE)
# a key=value pair of a URL's query or a libpq DSN; a DSN's value may be single-quoted
_PAIR = re.compile(
    r"(?P<key>[a-z_][\w.-]*)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&;]*)", re.IGNORECASE
)


def masked_text(text: str) -> str:
    """``text`` with the secrets it holds whatever it is named as `MASK`: each URL's password
    and the value of each secret-named key of a URL's query or of a libpq key/value DSN
    (``password=...``, ``sslpassword='...'``), wherever they are in it.

    Args:
        text: Any text: a URL, a DSN, a setting.

    Returns:
        The text, its secrets masked.
    """
    return _text_secrets(text, [])


def text_secrets(text: str) -> list[str]:
    """The secrets `masked_text` masks in ``text``, for scrubbing them out of messages that
    quote them alone (a driver's error).

    Args:
        text: Any text.

    Returns:
        Each secret, as written (a DSN's quotes taken off too).
    """
    found: list[str] = []
    _text_secrets(text, found)
    return [secret for secret in found if secret]


def _text_secrets(text: str, found: list[str]) -> str:
    if "=" not in text and "@" not in text:  # the common case: nothing to look at
        return text

    def password(match: re.Match[str]) -> str:
        found.append(match["password"])
        return f"{match['head']}:{MASK}@"

    def pair(match: re.Match[str]) -> str:
        if not is_secret_name(match["key"]):
            return inner_pairs(match)
        value = match["value"]
        found.append(value)
        if value.startswith("'"):
            found.append(re.sub(r"\\(.)", r"\1", value[1:-1]))
        return f"{match['key']}{match['eq']}{MASK}"

    def inner_pairs(match: re.Match[str]) -> str:
        # a value holding pairs of its own: libpq's options=-c app.upstream=password=..., the
        # setting app.upstream innocent, its value not (the scan went on after the value whole)
        value = match["value"]
        if "=" not in value:
            return match[0]
        quote = "'" if len(value) > 1 and value[0] == value[-1] == "'" else ""
        inner = value[1:-1] if quote else value
        return f"{match['key']}{match['eq']}{quote}{_PAIR.sub(pair, inner)}{quote}"

    def lone_user(match: re.Match[str]) -> str:
        found.append(match["password"])
        return f"{match['head']}{MASK}@"

    text = _REDIS_LONE_USER.sub(lone_user, _USERINFO.sub(password, text))
    return _PAIR.sub(pair, text)


def is_secret_name(name: str) -> bool:
    """Whether a value named ``name`` (a column, attribute, parameter, URL query key or connect
    argument) is a secret's, by `SECRET_NAMES`.

    Args:
        name: The name.

    Returns:
        True when its values are never shown.
    """
    return SECRET_NAMES.search(name) is not None


def is_sensitive(info: Mapping[str, Any], *names: str) -> bool:
    """Whether a column's values are a secret's: marked so in its ``info`` (``{"sensitive":
    True}``; ``False`` says they are not, whatever its name), else named like a secret.

    Args:
        info: The column's ``info``.
        *names: Its names (the attribute key, the column's name).

    Returns:
        True when its values are kept out of default allow-lists and the audit log.
    """
    marked = info.get("sensitive")
    if marked is not None:
        return bool(marked)
    return any(is_secret_name(name) for name in names)


def masked_values(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """``mapping`` (connect arguments, a row) with the value of each secret-looking key as
    `MASK`, in the mappings it holds too (asyncpg's ``server_settings``), and the secrets in
    each text (`masked_text`: a DSN's password), for a repr or a message.

    Args:
        mapping: Names (or anything, taken by its ``str``) to values.

    Returns:
        A copy, its secrets masked.
    """
    return {
        key: MASK
        if is_secret_name(str(key))
        else masked_values(item)
        if isinstance(item, Mapping)
        else masked_text(item)
        if isinstance(item, str)
        else item
        for key, item in mapping.items()
    }


def masked_repr(value: Any, depth: int = 8) -> str:
    """``repr(value)`` with the value of each secret-looking field or key as `MASK`, and the
    secrets in each text (`masked_text`), through the dataclasses, mappings, lists and tuples
    it holds (an event's nested ``Credentials``, a
    list of headers), for a log line. A dataclass field declared ``repr=False`` is left out.

    Args:
        value: Anything.
        depth: How many levels of containers to go through; deeper ones show as ``...``.

    Returns:
        The text.
    """
    if depth < 0:
        return "..."

    def item(name: Any, inner: Any) -> str:
        return repr(MASK) if is_secret_name(str(name)) else masked_repr(inner, depth - 1)

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f for f in dataclasses.fields(value) if f.repr]
        shown = ", ".join(f"{f.name}={item(f.name, getattr(value, f.name))}" for f in fields)
        return f"{type(value).__name__}({shown})"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key!r}: {item(key, inner)}" for key, inner in value.items()) + "}"
    if isinstance(value, str):
        return repr(masked_text(value))
    if isinstance(value, list | tuple) and type(value) in (list, tuple):
        shown = ", ".join(masked_repr(inner, depth - 1) for inner in value)
        return (
            f"[{shown}]"
            if isinstance(value, list)
            else f"({shown}{',' if len(value) == 1 else ''})"
        )
    return repr(value)


def secret_values(mapping: Mapping[Any, Any]) -> list[Any]:
    """The values `masked_values` masks in ``mapping``.

    Args:
        mapping: Names to values.

    Returns:
        Each secret-looking key's value, in the mappings it holds too.
    """
    found: list[Any] = []
    for key, item in mapping.items():
        if is_secret_name(str(key)):
            found.append(item)
        elif isinstance(item, Mapping):
            found += secret_values(item)
    return found
