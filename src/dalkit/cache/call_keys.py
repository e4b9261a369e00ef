"""The key of one call of a memoized function: which function (its module and qualified name,
or the ``name`` it was memoized under) and the values of its arguments.

The arguments are bound to the function's signature first, so ``f(1)``, ``f(x=1)`` and
``f(1, flag=False)`` with ``flag=False`` by default are one call. Their values are then written
out so that equal values give equal text in every process: a dict's or a set's order, which
follows insertion and the hash seed, does not count.

A function a factory makes (``counter.<locals>.count``) has one qualified name for every
function the factory returns. Unless ``name`` says otherwise, the values each one captured that
can only parameterise it (numbers, strings, dates and times, decimals, UUIDs, enum members,
classes, functions, and tuples, named tuples and frozen dataclasses of them) are keyed too, so
``counter("a")`` and ``counter("b")`` never share an entry, as each would keep its own
``functools.lru_cache``. A function that is itself made in a function (a lambda, a key function
handed to the factory) counts by its code and by what it captured and its defaults, when those
are parameters too. Captured state (a list, a session, a database, a mutable dataclass, a local
class) is not keyed: it changes, or has no value to key by.

An argument whose only text is its memory address (an object without a ``__repr__`` of its own,
a function, a session) cannot key a call: such a key never hits in another process, and in this
one another object born at that address later would be served this one's result. Such an
argument is refused with `UncacheableCallError`.

Written by hand: pickle's bytes are not canonical (a set pickles in iteration order), and
``functools.lru_cache`` keys by ``hash``/``==`` in one process only, where a Redis key must
mean the same call to every process that shares it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import types
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dalkit.cache.errors import UncacheableCallError
from dalkit.cache.keys import ADDRESS

__all__ = ["CallKeys"]

#: types whose repr is their value, and tells the type apart ("1", "1.0", "'1'", "b'1'")
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})
#: immutable values that a factory may capture to parameterise what it makes
_CAPTURED_VALUES = (dt.date, dt.time, dt.timedelta, decimal.Decimal, uuid.UUID)


class CallKeys:
    """The keys of the calls of one memoized function.

    Args:
        namespace: What every key of the cache starts with.
        fn: The function memoized.
        name: The name its entries are kept under; default ``module.qualified_name`` and, for
            a function a factory made, the values it captured that parameterise it. Two
            functions memoized under one name share entries.
    """

    def __init__(self, namespace: str, fn: Callable[..., Any], name: str | None = None) -> None:
        self.function = name or f"{fn.__module__}.{fn.__qualname__}"
        self._prefix = f"{namespace}:f:"
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # a callable without one (some built-ins)
            self._signature = None
        # a call passing every parameter by position, in order, needs no binding (a memory
        # hit of a three-parameter function: 8.1 -> 5.2 us, timeit)
        parameters = self._signature.parameters.values() if self._signature else ()
        by_position = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
        self._names = tuple(p.name for p in parameters) if by_position else None
        closure = getattr(fn, "__closure__", None)
        code = getattr(fn, "__code__", None)
        captured = zip(code.co_freevars, closure, strict=True) if closure and code else ()
        # read at each call: a factory's variable may be rebound after it made the function
        self._captured = () if name else tuple(captured)

    def key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The key of a call with ``args`` and ``kwargs``.

        Raises:
            UncacheableCallError: An argument has no value to key by (its repr is an address),
                or refers to itself.
            TypeError: The arguments do not fit the function's signature (as calling it would).
        """
        arguments: Mapping[str, Any]
        if self._names is not None and not kwargs and len(args) == len(self._names):
            arguments = dict(zip(self._names, args, strict=True))
        elif self._signature is None:
            arguments = {"*": args, "**": dict(kwargs)}
        else:
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
        text = "\x00".join(
            f"{name}={_encoded(value, self.function, name, ())}"
            for name, value in arguments.items()
        )
        if self._captured:
            text += "".join(f"\x00{var}@{_parameter_text(cell)}" for var, cell in self._captured)
        material = f"{self.function}\x00{text}"
        return self._prefix + hashlib.blake2b(material.encode(), digest_size=20).hexdigest()


def _encoded(value: Any, function: str, argument: str, inside: tuple[int, ...]) -> str:
    kind = type(value)
    if kind in _PLAIN:
        return repr(value)
    if kind in _CONTAINERS:
        if id(value) in inside:
            raise UncacheableCallError(
                f"cannot memoize {function}: argument {argument!r} contains itself"
            )
        inner = functools.partial(
            _encoded, function=function, argument=argument, inside=(*inside, id(value))
        )
        return _CONTAINERS[kind](value, inner)
    text = repr(value)
    inherited = all("__repr__" not in vars(klass) for klass in kind.__mro__[:-1])
    if inherited or ADDRESS.search(text):  # object's own repr: "<x.Y object at 0x...>"
        raise UncacheableCallError(
            f"cannot memoize {function}: argument {argument!r} ({kind.__qualname__}) has no "
            "value to key the call by, only a memory address. Pass the values the result "
            "depends on (an id, a tenant, a date), or give the class a __repr__ of them"
        )
    # the type's full name: two classes of one name in two modules are not one value
    return f"{kind.__module__}.{kind.__qualname__}:{text}"


def _parameter_text(cell: types.CellType) -> str:
    """The text of a captured value that can only parameterise a function; "" for state."""
    try:
        value = cell.cell_contents
    except ValueError:  # not bound yet: the function would fail on it anyway
        return ""
    return _parameter(value) or ""


def _parameter(value: Any, inside: tuple[int, ...] = ()) -> str | None:
    kind = type(value)
    if kind in _PLAIN:
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{kind.__module__}.{kind.__qualname__}.{value.name}"
    if isinstance(value, _CAPTURED_VALUES):
        return f"{kind.__module__}.{kind.__qualname__}:{value!r}"
    if isinstance(value, types.FunctionType):
        return _function(value, inside)
    if isinstance(value, type) and "<locals>" not in value.__qualname__:
        return f"{value.__module__}.{value.__qualname__}"
    if kind is tuple or kind is frozenset:
        texts = _parameters(value, inside)
        if texts is None:
            return None
        return f"{kind.__name__}({','.join(sorted(texts) if kind is frozenset else texts)})"
    fields = _value_fields(value)
    if fields is None:
        return None
    # a value object (a named tuple, a frozen dataclass)
    texts = _parameters([item for _, item in fields], inside)
    if texts is None:
        return None
    pairs = ",".join(f"{name}={text}" for (name, _), text in zip(fields, texts, strict=True))
    return f"{kind.__module__}.{kind.__qualname__}({pairs})"


def _parameters(values: Iterable[Any], inside: tuple[int, ...]) -> list[str] | None:
    """The texts of ``values``; None when one of them is state, which makes what holds them
    (a tuple, a value object, a function's closure) state too."""
    texts = []
    for value in values:
        text = _parameter(value, inside)
        if text is None:
            return None
        texts.append(text)
    return texts


def _function(fn: types.FunctionType, inside: tuple[int, ...]) -> str | None:
    """A module-level function by its name. One that another function made (a key function or
    a strategy handed to a factory, a lambda) by where its code starts, its bytecode and plain
    constants, and the values of its defaults and of what it captured, when all of them are
    parameters; None when one is state."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    if "<locals>" not in fn.__qualname__:
        return name
    if id(fn) in inside:
        return "<itself>"  # a recursive function's own name, in its closure
    values = [*(fn.__defaults__ or ()), *sorted((fn.__kwdefaults__ or {}).items())]
    try:
        values += [cell.cell_contents for cell in fn.__closure__ or ()]
    except ValueError:  # a variable not bound yet
        return None
    texts = _parameters(values, (*inside, id(fn)))
    if texts is None:
        return None
    return f"{name}:{_code_text(fn.__code__)}({','.join(texts)})"


@functools.lru_cache(maxsize=256)  # read at each call: a key took 5.0 us without it, 4.3 with
def _code_text(code: types.CodeType) -> str:
    """Where a function's code starts, its bytecode's digest and its plain constants: what
    tells two lambdas of one line and one qualified name apart in every process."""
    constants = [repr(constant) for constant in code.co_consts if type(constant) in _PLAIN]
    digest = hashlib.blake2b(code.co_code, digest_size=8).hexdigest()
    return f"{code.co_firstlineno}:{digest}:{','.join(constants)}"


def _value_fields(value: Any) -> list[tuple[str, Any]] | None:
    """The fields of a named tuple or of a frozen dataclass instance; None for anything else
    (a mutable dataclass is state: its fields may change after the factory captured it)."""
    kind = type(value)
    names = getattr(kind, "_fields", None)
    if isinstance(value, tuple) and isinstance(names, tuple):
        return list(zip(names, value, strict=True))
    params = getattr(kind, "__dataclass_params__", None)
    if params is not None and params.frozen and not isinstance(value, type):
        return [(field.name, getattr(value, field.name)) for field in dataclasses.fields(value)]
    return None


def _sequence(open_: str, close: str) -> Callable[[Any, Callable[[Any], str]], str]:
    return lambda value, inner: open_ + ",".join(inner(item) for item in value) + close


def _unordered(open_: str) -> Callable[[Any, Callable[[Any], str]], str]:
    return lambda value, inner: open_ + ",".join(sorted(inner(item) for item in value)) + "}"


def _mapping(value: Any, inner: Callable[[Any], str]) -> str:
    pairs = sorted(f"{inner(key)}:{inner(item)}" for key, item in value.items())
    return "{" + ",".join(pairs) + "}"


_CONTAINERS: dict[type, Callable[[Any, Callable[[Any], str]], str]] = {
    tuple: _sequence("(", ",)"),
    list: _sequence("[", "]"),
    dict: _mapping,
    set: _unordered("set{"),
    frozenset: _unordered("frozenset{"),
}
