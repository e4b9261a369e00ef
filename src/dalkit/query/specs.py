"""Specifications and ``field__op`` filters: parsed against an allow-list, then compiled to SQL or
evaluated in Python with SQL's three-valued logic. No I/O.

A `Spec` is model-agnostic until a repository resolves it; resolution fails closed on any
unknown field, operator or uncoercible value.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Set
from typing import Any, Literal

import sqlalchemy as sa

from dalkit.engine.fixed_chars import char_length, compared, unpadded
from dalkit.errors import InvalidFilterError
from dalkit.query.errors import InputTooLongError
from dalkit.query.fields import CoercionError, FieldInfo, ModelInfo, to_bool
from dalkit.query.inputs import as_held, refusal
from dalkit.query.like import (
    ANY_CHAR,
    ANY_STRING,
    PATTERN_TYPE,
    SQL_ESCAPE,
    like_matches,
    parse_like,
    render_glob,
    render_like,
)
from dalkit.secret_names import MASK, masked_values

__all__ = [
    "MAX_INPUT_LENGTH",
    "OPERATORS",
    "Condition",
    "FilterParser",
    "Group",
    "Node",
    "Spec",
    "search_group",
]

OPERATORS = (
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "not_in",
    "like",
    "ilike",
    "contains",
    "startswith",
    "isnull",
    "between",
)
_ORDERED_OPS = frozenset({"lt", "lte", "gt", "gte", "between"})
_TEXT_OPS = frozenset({"like", "ilike", "contains", "startswith"})
_LIST_OPS = frozenset({"in", "not_in"})
_PATTERN_OPS = frozenset({"like", "ilike"})
_COMPARED: dict[str, Callable[[Any, Any], Any]] = dict(
    eq=operator.eq, ne=operator.ne, lt=operator.lt, lte=operator.le, gt=operator.gt, gte=operator.ge
)
#: longest ``in``/``not_in`` list accepted; longer lists are almost always a bug or an attack
MAX_LIST_VALUES = 1000
#: longest filter or search text accepted by default (a repository's ``max_input_length``)
MAX_INPUT_LENGTH = 1000
_ANY_STRING, _ANY_CHAR = ANY_STRING, ANY_CHAR


class Spec:
    """A composable condition: ``Spec(age__gte=18, status="active")`` is the AND of its filters.

    Combine with ``&``, ``|`` and ``~``; name domain rules by subclassing. Positional
    arguments are other specs, ANDed with the filters. The filters of a spec may name any mapped
    column of the model (specs are code); keyword filters passed to repository reads are user
    input and are held to the repository's ``filterable`` list.

    Raises:
        TypeError: When a positional argument is not a spec.

    Examples:
        ```python
        class ActiveUsers(Spec):
            def __init__(self) -> None:
                super().__init__(is_active=True)


        adults = repo.list(ActiveUsers() & Spec(age__gte=18) | Spec(role__in=["admin"]))
        ```
    """

    __slots__ = ("_filters", "_op", "_specs")

    def __init__(self, *specs: Spec, **filters: Any) -> None:
        for spec in specs:
            if not isinstance(spec, Spec):
                raise TypeError(f"Spec() takes other specs positionally, got {type(spec).__name__}")
        self._op: Literal["and", "or", "not"] = "and"
        self._specs: tuple[Spec, ...] = specs
        self._filters: tuple[tuple[str, Any], ...] = tuple(filters.items())

    @classmethod
    def _combine(cls, op: Literal["and", "or", "not"], specs: tuple[Spec, ...]) -> Spec:
        node = Spec()
        node._op = op
        node._specs = specs
        return node

    def __and__(self, other: object) -> Spec:
        if not isinstance(other, Spec):
            return NotImplemented
        return Spec._combine("and", (self, other))

    def __or__(self, other: object) -> Spec:
        if not isinstance(other, Spec):
            return NotImplemented
        return Spec._combine("or", (self, other))

    def __invert__(self) -> Spec:
        return Spec._combine("not", (self,))

    def __repr__(self) -> str:
        if type(self) is not Spec:
            return f"{type(self).__name__}()"
        if self._op == "not":
            return f"~{self._specs[0]!r}"
        if self._op == "or":
            return "(" + " | ".join(map(repr, self._specs)) + ")"
        filters = masked_values(dict(self._filters))  # a secret-looking field's value: ***
        parts = [repr(s) for s in self._specs] + [f"{k}={v!r}" for k, v in filters.items()]
        return f"Spec({', '.join(parts)})"

    def resolve(self, parser: FilterParser) -> Node:
        """This spec as a tree of parsed conditions.

        Args:
            parser: The filter parser of a repository's model.

        Returns:
            The condition tree.

        Raises:
            InvalidFilterError: For a field or operator the model does not have, or a bad value.
        """
        if self._op == "not":
            return Group("not", (self._specs[0].resolve(parser),))
        children = [spec.resolve(parser) for spec in self._specs]
        children += [parser.condition(key, value) for key, value in self._filters]
        return Group(self._op, tuple(children))


@dataclasses.dataclass(frozen=True, eq=False)
class Condition:
    """One parsed filter: a field, an operator and a value already coerced to the field's type."""

    field: FieldInfo
    op: str
    value: Any
    max_length: int = dataclasses.field(default=MAX_INPUT_LENGTH, repr=False)

    def __repr__(self) -> str:  # a sensitive field's value (marked in its info, or by name): ***
        value = MASK if self.field.sensitive else self.value
        return f"Condition(field={self.field.name!r}, op={self.op!r}, value={value!r})"

    def __post_init__(self) -> None:
        # also guards conditions built without coerce_condition (search text)
        if self.op in _PATTERN_OPS:
            literal = sum(isinstance(token, str) for token in self.value)
            if literal > self.max_length or len(self.value) > self.max_length + 2:
                raise _too_long(self.field.name, self.max_length)

    def to_sql(
        self, dialect: str, target: sa.ColumnElement[Any] | None = None
    ) -> sa.ColumnElement[bool]:
        """The condition on the field's column, or on ``target`` (an aggregate, for HAVING)."""
        column = compared(self.field.column) if target is None else target
        op, value = self.op, self.value
        if op == "isnull":
            return column.is_(None) if value else column.is_not(None)
        if op in _LIST_OPS and not value:
            # an empty list: NOT IN () holds for every row, IN () for none, NULL or not
            return sa.true() if op == "not_in" else sa.false()
        simple: dict[str, Callable[[], sa.ColumnElement[bool]]] = {
            "eq": lambda: column == value,
            "ne": lambda: column != value,
            "lt": lambda: column < value,
            "lte": lambda: column <= value,
            "gt": lambda: column > value,
            "gte": lambda: column >= value,
            "in": lambda: column.in_(value),
            "not_in": lambda: column.not_in(value),
            "between": lambda: column.between(value[0], value[1]),
        }
        if op in simple:
            return simple[op]()
        glob = dialect == "sqlite" and op != "ilike"  # SQLite's case-sensitive match
        pattern = sa.literal((render_glob if glob else render_like)(value), PATTERN_TYPE)
        if glob:
            return column.op("GLOB", is_comparison=True)(pattern)
        if op == "ilike" and dialect != "sqlite":
            # SQLite's LIKE already ignores ASCII case, PostgreSQL's ILIKE does so in the C locale
            return column.ilike(pattern, escape=SQL_ESCAPE)
        return column.like(pattern, escape=SQL_ESCAPE)

    def test(self, value: Any) -> bool | None:
        """SQL's verdict on a row whose field holds ``value``: True, False or None (unknown)."""
        op, target = self.op, self.value
        if op == "isnull":
            return (value is None) is target
        if op in _LIST_OPS and not target:
            return op == "not_in"
        if value is None:
            return None
        if value != value:  # a NaN row value: above every number, as in PostgreSQL
            return op in ("ne", "gt", "gte", "not_in")  # targets are never NaN (refused)
        if op in _ORDERED_OPS and (length := char_length(self.field.column.type)) is not None:
            # a CHAR(n) ordered as PostgreSQL orders it: without its trailing spaces
            value, target = unpadded(value, length), unpadded(target, length)
        if op in _COMPARED:
            return bool(_COMPARED[op](value, target))
        if op == "in":
            return value in target
        if op == "not_in":
            return value not in target
        if op == "between":
            return bool(target[0] <= value <= target[1])
        return like_matches(target, value, fold_case=op == "ilike")


@dataclasses.dataclass(frozen=True)
class Group:
    """AND, OR or NOT over parsed conditions."""

    op: Literal["and", "or", "not"]
    children: tuple[Node, ...]

    def to_sql(self, dialect: str) -> sa.ColumnElement[bool]:
        parts = [child.to_sql(dialect) for child in self.children]
        if self.op == "not":
            return sa.not_(parts[0])
        if self.op == "or":
            return sa.or_(sa.false(), *parts) if not parts else sa.or_(*parts)
        return sa.and_(sa.true(), *parts) if not parts else sa.and_(*parts)

    def test(self, entity: Any) -> bool | None:
        """Kleene logic, as SQL evaluates AND, OR and NOT over unknowns."""
        if self.op == "not":
            verdict = _test(self.children[0], entity)
            return None if verdict is None else not verdict
        verdicts = [_test(child, entity) for child in self.children]
        if self.op == "or":
            return True if True in verdicts else (None if None in verdicts else False)
        return False if False in verdicts else (None if None in verdicts else True)


Node = Condition | Group


def _test(node: Node, entity: Any) -> bool | None:
    if isinstance(node, Condition):
        return node.test(getattr(entity, node.field.name))
    return node.test(entity)


def matches(node: Node, entity: Any) -> bool:
    """Whether SQL would return ``entity``'s row for ``WHERE node``."""
    return _test(node, entity) is True


class FilterParser:
    """Parses ``field__op=value`` filters of one model against an allow-list of field names."""

    def __init__(
        self, info: ModelInfo, allowed: Iterable[str], max_input_length: int = MAX_INPUT_LENGTH
    ) -> None:
        self.info = info
        self.allowed: dict[str, FieldInfo] = {name: info.fields[name] for name in allowed}
        self.max_input_length = max_input_length
        # per field, once: recomputing them cost ~10 us per filter (bench/peers page of 20)
        self._operators = {name: operators_for(f) for name, f in self.allowed.items()}

    def parse(self, filters: Mapping[str, Any]) -> Group:
        return Group("and", tuple(self.condition(k, v) for k, v in filters.items()))

    def condition(self, key: object, value: Any) -> Condition:
        if not isinstance(key, str):
            raise InvalidFilterError(
                f"filter keys must be strings, got {type(key).__name__}",
                name=repr(key),
                allowed=sorted(self.allowed),
            )
        name, op = (key, "eq") if key in self.allowed else _split(key)
        field = self.allowed.get(name)
        if field is None:
            raise InvalidFilterError(
                f"unknown or disallowed filter field {_short(name)}",
                name=name,
                allowed=sorted(self.allowed),
            )
        allowed_ops = self._operators[name]
        if op not in allowed_ops:
            raise InvalidFilterError(
                f"unknown or disallowed operator {_short(op)} for {field.name}",
                name=key,
                allowed=allowed_ops,
            )
        try:
            return coerce_condition(field, op, value, self.max_input_length)
        except CoercionError as exc:
            raise InvalidFilterError(refusal(_short(key), field, exc), name=key) from None


def operators_for(field: FieldInfo) -> tuple[str, ...]:
    """The operators that make sense for ``field``'s kind, in `OPERATORS` order."""
    return tuple(
        op
        for op in OPERATORS
        if (op not in _ORDERED_OPS or field.ordered)
        and (op not in _TEXT_OPS or field.kind == "str")
    )


def _split(key: str) -> tuple[str, str]:
    name, sep, op = key.rpartition("__")
    return (name, op) if sep else (key, "eq")


def coerce_condition(
    field: FieldInfo, op: str, value: Any, max_length: int = MAX_INPUT_LENGTH
) -> Condition:
    """A condition with ``value`` checked and coerced for ``op``; raises CoercionError, or
    InputTooLongError for text longer than ``max_length``."""
    if op in ("eq", "ne") and value is None:
        return Condition(field, "isnull", op == "eq")
    if op == "isnull":
        return Condition(field, op, to_bool(value))
    if op in _LIST_OPS or op == "between":
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Collection):
            # a mapping is a collection of its keys, which would silently become the values
            raise CoercionError(f"{op} expects a list of values, got {type(value).__name__}")
        if op == "between" and isinstance(value, Set):
            raise CoercionError("between expects an ordered [low, high] list, not a set")
        if len(value) > MAX_LIST_VALUES:
            raise CoercionError(f"{op} accepts at most {MAX_LIST_VALUES} values")
        if op == "between" and len(value) != 2:
            raise CoercionError("between expects exactly two values: [low, high]")
        if any(item is None for item in value):
            raise CoercionError(f"{op} cannot hold null; use isnull")
        for item in value:
            _check_length(field, item, max_length)
        items = tuple(as_held(field, field.coerce(item)) for item in value)
        return Condition(field, op, frozenset(items) if op in _LIST_OPS else items)
    if value is None:
        raise CoercionError(f"{op} cannot compare with null; use isnull")
    _check_length(field, value, max_length)
    coerced = field.coerce(value)
    if op in ("like", "ilike"):
        return Condition(field, op, parse_like(coerced), max_length)
    if op == "contains":
        return Condition(field, "like", [_ANY_STRING, *coerced, _ANY_STRING], max_length)
    if op == "startswith":
        return Condition(field, "like", [*coerced, _ANY_STRING], max_length)
    return Condition(field, op, as_held(field, coerced), max_length)


def search_group(
    fields: Iterable[FieldInfo], text: str, max_length: int = MAX_INPUT_LENGTH
) -> Group:
    """Case-insensitive (ASCII) substring match of ``text`` in any of ``fields``; ``%`` and
    ``_`` in ``text`` are plain characters. Raises InputTooLongError past ``max_length``."""
    if len(text) > max_length:
        raise _too_long("search text", max_length)
    tokens: list[str | int] = [_ANY_STRING, *text, _ANY_STRING]
    return Group("or", tuple(Condition(f, "ilike", tokens, max_length) for f in fields))


def _check_length(field: FieldInfo, value: Any, max_length: int) -> None:
    if isinstance(value, str | bytes) and len(value) > max_length:
        raise _too_long(field.name, max_length)


def _too_long(name: str, max_length: int) -> InputTooLongError:
    return InputTooLongError(
        f"{name}: text longer than {max_length} characters is refused",
        name=name,
        allowed=(f"at most {max_length} characters",),
    )


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
