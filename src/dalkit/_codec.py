"""The one value <-> JSON codec: how audit rows, outbox payloads and cursors turn Python values
into JSON (`jsonable()`) and back (`restore()`, guided by the type the value had).

The JSON stays plain and readable (a UUID is its string, a Decimal its digits, bytes base64, a
dataclass an object); the type hint of the field being read restores the exact value. Aware
datetimes and times with a named zone carry it after the offset, RFC 9557 style
(``2024-03-31T03:30:00+02:00[Europe/Paris]``), so wall time, zone and fold come back. Floats
that JSON cannot hold are the strings ``"inf"``, ``"-inf"`` and ``"nan"``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import re
import sys
import types
import typing
import uuid
import zoneinfo
from collections.abc import Mapping
from typing import Any

from dalkit.errors import DalkitError

__all__ = ["CodecError", "dumps", "field_hints", "jsonable", "loads", "restore"]

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_SEQUENCES = (list, tuple, set, frozenset)
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{6}))?)?$")
# built once: json.dumps() with any option builds an encoder per call (+1.3 us, timeit)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class CodecError(DalkitError, ValueError):
    """JSON that cannot be read back as a value of the type asked for."""


def jsonable(value: Any, *, strict: bool = False) -> Any:
    """``value`` as something ``json.dumps`` accepts, losing nothing `restore()` needs.

    A value of another type is its ``str()``, which its type reads back (a ``Path``, an
    ``IPv4Address``). ``strict`` refuses one whose type does not give back an equal value from
    that text (``<Money object at 0x...>``) with a `CodecError`, instead of storing the text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if type(value) is list or type(value) is tuple:
        # before the dataclass and Mapping checks, which cost ~1 us: a cursor's sort values
        return [jsonable(v, strict=strict) for v in value]
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, enum.Enum):
        return jsonable(value.value, strict=strict)
    if isinstance(value, dt.datetime | dt.time):
        zone = getattr(value.tzinfo, "key", None)
        text = value.isoformat()
        return f"{text}[{zone}]" if isinstance(zone, str) else text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name), strict=strict)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {_key(k, strict): jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        return [jsonable(v, strict=strict) for v in value]
    text = str(value)
    if strict and not _reads_back(value, text):
        raise CodecError(
            f"a {type(value).__name__} is not a JSON value, and {type(value).__name__}(str(value)) "
            "does not give it back: make it a dataclass, or convert it to a plain value"
        )
    return text


def _key(key: Any, strict: bool) -> str:
    """A mapping key as JSON object keys are, text: what `jsonable()` makes of it (an enum its
    value, a UUID or a date its text), a number, boolean or null as JSON writes it, which
    `restore()` reads back as the key's type. ``strict`` refuses a key that is no such value (a
    tuple, a dataclass) with a `CodecError`; else it is its ``str()``."""
    if type(key) is str:
        return key
    data = jsonable(key, strict=strict)
    if isinstance(data, str):
        return data
    if data is None or isinstance(data, bool | int | float):
        return _ENCODER.encode(data)
    if strict:
        raise CodecError(
            f"a {type(key).__name__} mapping key is not a JSON value: use text, numbers, enums, "
            "UUIDs, decimals or dates as keys"
        )
    return str(key)


def _reads_back(value: Any, text: str) -> bool:
    """Whether ``value``'s type, called with ``text`` (its ``str()``), makes an equal value: what
    `restore()` does with a field of that type."""
    try:
        return bool(type(value)(text) == value)
    except Exception:
        return False


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``."""
    return _ENCODER.encode(jsonable(value))


def loads(text: str | bytes, hint: Any = Any) -> Any:
    """The value `dumps()` wrote, as ``hint``; raises CodecError."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CodecError(f"not JSON: {exc}") from None
    return restore(data, hint)


def restore(data: Any, hint: Any) -> Any:
    """The value of type ``hint`` that `jsonable()` turned into ``data``; raises
    CodecError when ``data`` cannot be one."""
    if hint is Any or hint is object:
        return data
    if type(data) is hint and (hint is int or hint is str or hint is bool):
        return data  # what JSON holds as is (a cursor's id): no look at the hint's origin
    if hint is None or hint is type(None):
        if data is not None:
            raise CodecError(f"expected null, got {type(data).__name__}")
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _restore_union(data, typing.get_args(hint))
    if origin is typing.Literal:
        if data not in typing.get_args(hint):
            raise CodecError(f"{_what(data)} is not one of {typing.get_args(hint)}")
        return data
    if origin is not None:
        return _restore_generic(data, origin, typing.get_args(hint))
    if hint in _SEQUENCES or hint is dict:
        # a bare container (``meta: dict``): its items are what JSON carries
        return _restore_generic(data, hint, (Any, ...) if hint is tuple else ())
    if not isinstance(hint, type):
        return data  # TypeVars, NewTypes and the like: what JSON carries
    try:
        return _restore_type(data, hint)
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, decimal.InvalidOperation, binascii.Error) as exc:
        raise CodecError(f"{_what(data)} is not a {hint.__name__} ({type(exc).__name__})") from None


def field_hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved annotations of ``cls`` and its bases, each in its own module's namespace
    (``typing.get_type_hints`` uses ``__module__``, which public classes such as
    ``dalkit.DomainEvent`` rewrite); one that cannot be resolved reads as ``Any``."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = dict(vars(module)) if module is not None else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    # annotations are code written in that class, never outside input
                    annotation = eval(annotation, namespace, dict(vars(klass)))
                except Exception:
                    annotation = Any
            hints[name] = annotation
    return hints


def _restore_union(data: Any, options: tuple[Any, ...]) -> Any:
    if data is None and type(None) in options:
        return None
    # str and Any accept almost anything, so they are tried after the precise types
    ordered = sorted(
        (o for o in options if o is not type(None)), key=lambda o: o is str or o is Any
    )
    for option in ordered:
        try:
            return restore(data, option)
        except CodecError:
            continue
    raise CodecError(f"{_what(data)} matches none of {options}")


def _restore_generic(data: Any, origin: Any, args: tuple[Any, ...]) -> Any:
    if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        if not isinstance(data, dict):
            raise CodecError(f"expected an object, got {type(data).__name__}")
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        return {_restore_key(k, key_hint): restore(v, value_hint) for k, v in data.items()}
    if not isinstance(data, list):
        raise CodecError(f"expected an array, got {type(data).__name__}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(restore(v, args[0]) for v in data)
        if len(args) != len(data):
            raise CodecError(f"expected {len(args)} items, got {len(data)}")
        return tuple(restore(v, a) for v, a in zip(data, args, strict=True))
    items = [restore(v, args[0] if args else Any) for v in data]
    if origin in (set, frozenset):
        return origin(items)
    return items


def _restore_key(key: str, hint: Any) -> Any:
    """The mapping key `_key()` wrote as ``key``: the text itself, or the number, boolean or
    null it spells as JSON (an integer key, an ``IntEnum``'s value)."""
    try:
        return restore(key, hint)
    except CodecError:
        try:
            data = json.loads(key)
        except ValueError:
            raise CodecError(f"a key that is not a {_hint_name(hint)}") from None
        if isinstance(data, list | dict | str):
            raise CodecError(f"a key that is not a {_hint_name(hint)}") from None
        return restore(data, hint)


def _what(data: Any) -> str:
    """What a CodecError says of the JSON it could not read: its type, never the value, which
    may be a secret (an error's text reaches logs, the outbox's last_error, the CLI)."""
    return f"a {type(data).__name__} value"


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _restore_type(data: Any, hint: type[Any]) -> Any:
    if dataclasses.is_dataclass(hint):
        return _restore_dataclass(data, hint)
    if issubclass(hint, enum.Enum):
        member_types = {type(m.value) for m in hint}
        value = restore(data, member_types.pop()) if len(member_types) == 1 else data
        return hint(value)
    if hint is bool or hint is int or hint is str:
        if type(data) is not hint:
            raise CodecError(f"expected {hint.__name__}, got {type(data).__name__}")
        return data
    if hint is float:
        if isinstance(data, str) and data in _NON_FINITE:
            return _NON_FINITE[data]
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise CodecError(f"expected a number, got {type(data).__name__}")
        return float(data)
    if not isinstance(data, str):
        raise CodecError(f"expected a string for {hint.__name__}, got {type(data).__name__}")
    if hint is decimal.Decimal:
        return decimal.Decimal(data)
    if hint is uuid.UUID:
        return uuid.UUID(data)
    if hint in (bytes, bytearray):
        return hint(base64.b64decode(data, validate=True))
    if hint is dt.datetime or hint is dt.time:
        return _restore_clock(data, hint)
    if hint is dt.date:
        return dt.date.fromisoformat(data)
    return hint(data)


def _restore_dataclass(data: Any, hint: type[Any]) -> Any:
    if not isinstance(data, dict):
        raise CodecError(f"expected an object for {hint.__name__}, got {type(data).__name__}")
    hints = field_hints(hint)
    values = {}
    for field in dataclasses.fields(hint):
        if field.init and field.name in data:
            try:
                values[field.name] = restore(data[field.name], hints.get(field.name, Any))
            except CodecError as exc:
                raise CodecError(f"{hint.__name__}.{field.name}: {exc}") from None
    unknown = set(data) - {f.name for f in dataclasses.fields(hint)}
    if unknown:
        raise CodecError(f"{hint.__name__} has no field(s) {sorted(unknown)}")
    return hint(**values)


def _restore_clock(data: str, hint: type[Any]) -> Any:
    text, bracket, zone_name = data.partition("[")
    offset = _OFFSET.search(text)
    if offset is None:
        value = hint.fromisoformat(text)
    else:
        # parsed here: Python 3.11's fromisoformat drops an offset's microseconds
        sign, hours, minutes, seconds, micros = offset.groups()
        delta = dt.timedelta(
            hours=int(hours),
            minutes=int(minutes),
            seconds=int(seconds or 0),
            microseconds=int(micros or 0),
        )
        zone_of_offset = dt.timezone(-delta if sign == "-" else delta)
        value = hint.fromisoformat(text[: offset.start()]).replace(tzinfo=zone_of_offset)
    if not bracket:
        return value
    try:
        zone = zoneinfo.ZoneInfo(zone_name.removesuffix("]"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CodecError("a datetime or time of an unknown time zone") from None
    if hint is dt.time:
        return value.replace(tzinfo=zone)
    # the offset written next to the wall time tells which of an ambiguous pair it was
    for fold in (0, 1):
        candidate = value.replace(tzinfo=zone, fold=fold)
        if candidate.utcoffset() == value.utcoffset():
            return candidate
    raise CodecError(f"a datetime whose offset does not exist in {zone.key}")
