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
handed to the factory), and a class made in a function, count by their code (a class by its
bases, and its methods' code and attributes' values) and by what they captured and their
defaults. Captured state (a list, a session, a database, a mutable dataclass) is not keyed: it
changes, or has no value to key by; the values beside it still are. A memoized lambda, or a
memoized function made in a function, is keyed by its code too: others share its qualified
name (``<lambda>``, ``make.<locals>.f``).

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
from collections.abc import Callable, Mapping
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
        code = getattr(fn, "__code__", None)
        if not name and code is not None and "<" in fn.__qualname__:
            # a lambda, or a function made in a function: others share its qualified name
            self.function += f":{_code_text(code)}"
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
    # the type's full name: two classes of one name in two modules are not one value; a class
    # made in a function by what it holds too: another call of that function makes another
    made = _local_class(kind, ()) if "<locals>" in kind.__qualname__ else ""
    return f"{kind.__module__}.{kind.__qualname__}{made}:{text}"


def _parameter_text(cell: types.CellType, inside: tuple[int, ...] = ()) -> str:
    """The text of a captured value that can only parameterise a function; `_STATE` for
    state."""
    try:
        value = cell.cell_contents
    except ValueError:  # not bound yet: the function would fail on it anyway
        return _STATE
    return _parameter(value, inside)


def _parameter(value: Any, inside: tuple[int, ...] = ()) -> str:
    kind = type(value)
    if kind in _PLAIN:
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{kind.__module__}.{kind.__qualname__}.{value.name}"
    if isinstance(value, _CAPTURED_VALUES):
        return f"{kind.__module__}.{kind.__qualname__}:{value!r}"
    if isinstance(value, types.FunctionType):
        return _function(value, inside)
    if isinstance(value, type):
        if "<locals>" in value.__qualname__:
            return _local_class(value, inside)
        return f"{value.__module__}.{value.__qualname__}"
    if kind is tuple or kind is frozenset:
        texts = [_parameter(item, inside) for item in value]
        return f"{kind.__name__}({','.join(sorted(texts) if kind is frozenset else texts)})"
    fields = _value_fields(value)
    if fields is None:
        return _STATE
    # a value object (a named tuple, a frozen dataclass)
    pairs = ",".join(f"{name}={_parameter(item, inside)}" for name, item in fields)
    return f"{kind.__module__}.{kind.__qualname__}({pairs})"


def _function(fn: types.FunctionType, inside: tuple[int, ...]) -> str:
    """A module-level function by its name. One that another function made (a key function or
    a strategy handed to a factory, a lambda) by where its code starts, its bytecode and
    constants, and the values of its defaults and of what it captured that are parameters."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    if "<locals>" not in fn.__qualname__:
        return name
    if id(fn) in inside:
        return "<itself>"  # a recursive function's own name, in its closure
    values = [*(fn.__defaults__ or ()), *sorted((fn.__kwdefaults__ or {}).items())]
    texts = [_parameter(value, (*inside, id(fn))) for value in values]
    texts += [_parameter_text(cell, (*inside, id(fn))) for cell in fn.__closure__ or ()]
    return f"{name}:{_code_text(fn.__code__)}({','.join(texts)})"


def _local_class(kind: type, inside: tuple[int, ...]) -> str:
    """A class made in a function, by its bases and what it holds (its methods by their code,
    its attributes' values that are parameters). Read at each call: a class's attributes may
    be set again."""
    if id(kind) in inside:
        return "<itself>"  # a method's __class__ cell, for super()
    within = (*inside, id(kind))
    bases = [_parameter(base, within) for base in kind.__bases__]
    members = [
        f"{name}={_parameter(member, within)}"
        for name, member in sorted(vars(kind).items(), key=lambda item: item[0])
        if name not in _CLASS_BOOKKEEPING
    ]
    return "{" + ",".join(bases + members) + "}"


#: what a captured value that is state (a list, a session, a mutable dataclass) is keyed by:
#: what it holds may change, or has no value to key by
_STATE = "?"
#: what every class's namespace holds besides what it was given
_CLASS_BOOKKEEPING = frozenset(
    {"__module__", "__qualname__", "__dict__", "__weakref__", "__doc__", "__annotations__"}
    | {"__firstlineno__", "__static_attributes__", "__slots__"}
)


@functools.lru_cache(maxsize=256)  # read at each call: a key took 5.0 us without it, 4.3 with
def _code_text(code: types.CodeType) -> str:
    """Where a function's code starts, its bytecode's, names' and constants' digest (those of
    the code it holds too: a lambda in it, a comprehension): what tells two lambdas of one line
    and one qualified name apart in every process."""
    material = "\x00".join([*code.co_names, *map(_constant_text, code.co_consts)])
    digest = hashlib.blake2b(code.co_code + material.encode(), digest_size=8).hexdigest()
    return f"{code.co_firstlineno}:{digest}"


def _constant_text(constant: Any) -> str:
    """A constant of compiled code, alike in every process (a frozenset's in sorted order)."""
    if isinstance(constant, types.CodeType):
        return _code_text(constant)
    if type(constant) is tuple:
        return "(" + ",".join(map(_constant_text, constant)) + ")"
    if type(constant) is frozenset:
        return "{" + ",".join(sorted(map(_constant_text, constant))) + "}"
    return repr(constant) if type(constant) in _PLAIN else type(constant).__name__


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
