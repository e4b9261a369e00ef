"""Options from ``DALKIT_<AREA>_<OPTION>`` environment variables, for DatabaseConfig and
RedisConfig: every variable under the area's prefix must name an option (a typo is an error
naming the closest one, never a silent default), and each value is parsed by its field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping
from typing import Any

from dalkit.errors import ConfigurationError

__all__ = ["options_from_env"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def options_from_env(
    env: Mapping[str, str], prefix: str, config_class: type[Any], skip: Collection[str]
) -> dict[str, Any]:
    """The options ``env`` sets for ``config_class`` (a dataclass), one ``<prefix><FIELD>``
    variable each; ``<prefix>URL`` is allowed and left to the caller.

    Args:
        env: The environment to read.
        prefix: Such as ``"DALKIT_DATABASE_"``.
        config_class: The dataclass whose fields are the options.
        skip: Fields that cannot come from a string (code, mappings), and the URL.

    Returns:
        Each option that a variable sets, parsed: bool, int, float, None or the string.

    Raises:
        ConfigurationError: A variable under ``prefix`` names no option, or a value does not
            parse as its option's type.
    """
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.name not in skip}
    allowed = {prefix + name.upper() for name in fields} | {prefix + "URL"}
    for variable in sorted(key for key in env if key.startswith(prefix)):
        if variable not in allowed:
            close = difflib.get_close_matches(variable, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigurationError(f"unknown environment variable {variable}{hint}")
    found: dict[str, Any] = {}
    for name, field in fields.items():
        raw = env.get(prefix + name.upper())
        if raw is not None:
            found[name] = _parse(prefix + name.upper(), raw, field.type)
    return found


def _parse(variable: str, raw: str, annotation: object) -> Any:
    text = str(annotation)
    word = raw.strip().lower()
    try:
        if word in ("", "none") and "None" in text:
            return None
        if text.startswith("bool"):
            if word not in _TRUE + _FALSE:
                raise ValueError(raw)
            return word in _TRUE
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigurationError(
            f"environment variable {variable} has an invalid value {raw!r}"
        ) from None
    return raw
