"""Parsed conditions as statement shapes plus bound values, so a repository builds the SELECT of
one shape (fields, operators, sort, window) once and reruns it with new values. No I/O.

Why: building ``select(Model).where(...).order_by(...).limit(...)`` and computing its cache key
cost about as much as running the cached query on loopback PostgreSQL (bench/peers, sync page of
20: ~185 us of ~600 us per request); a statement reused with named parameters skips both.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import sqlalchemy as sa

from dalkit.engine.fixed_chars import compared
from dalkit.query.like import PATTERN_TYPE, SQL_ESCAPE, render_glob, render_like
from dalkit.query.specs import Condition, Group, Node

__all__ = ["LIMIT_PARAM", "OFFSET_PARAM", "StatementCache", "bound_condition", "shape_of"]

#: bind names of the window; condition values are ``dk_p0``, ``dk_p1``, ... in tree order
LIMIT_PARAM, OFFSET_PARAM = "dk_limit", "dk_offset"
_LIST_OPS = frozenset({"in", "not_in"})


def shape_of(node: Node, dialect: str, params: dict[str, Any]) -> Hashable:
    """What the SQL of ``node`` depends on apart from its values; the values go to ``params``
    under the names `bound_condition()` gives them (the two walk the tree alike)."""
    if isinstance(node, Group):
        return (node.op, tuple(shape_of(child, dialect, params) for child in node.children))
    op, value = node.op, node.value
    if op == "isnull":
        return (node.field.name, op, bool(value))
    if op in _LIST_OPS:
        if not value:
            return (node.field.name, op, None)
        params[_name(params)] = list(value)
    elif op == "between":
        params[_name(params)] = value[0]
        params[_name(params)] = value[1]
    elif op == "ilike" or (op == "like" and dialect != "sqlite"):
        params[_name(params)] = render_like(value)
    elif op == "like":
        params[_name(params)] = render_glob(value)
    else:
        params[_name(params)] = value
    return (node.field.name, op)


def bound_condition(node: Node, dialect: str, names: list[str]) -> sa.ColumnElement[bool]:
    """``node.to_sql(dialect)`` with every value a named bind parameter (see `shape_of()`);
    ``names`` collects the names used, in order."""
    if isinstance(node, Group):
        parts = [bound_condition(child, dialect, names) for child in node.children]
        if node.op == "not":
            return sa.not_(parts[0])
        if not parts:
            return sa.true() if node.op == "and" else sa.false()
        return sa.or_(*parts) if node.op == "or" else sa.and_(*parts)
    if node.op == "isnull" or (node.op in _LIST_OPS and not node.value):
        return node.to_sql(dialect)  # no value to bind
    return _bound_comparison(node, dialect, names)


def _bound_comparison(node: Condition, dialect: str, names: list[str]) -> sa.ColumnElement[bool]:
    column = compared(node.field.column)  # a CHAR(n) compared as PostgreSQL compares it
    op = node.op

    def bind(expanding: bool = False, pattern: bool = False) -> sa.BindParameter[Any]:
        names.append(f"dk_p{len(names)}")
        if expanding:
            return sa.bindparam(names[-1], expanding=True)
        return sa.bindparam(names[-1], type_=PATTERN_TYPE if pattern else column.type)

    if op == "eq":
        return column == bind()
    if op == "ne":
        return column != bind()
    if op == "lt":
        return column < bind()
    if op == "lte":
        return column <= bind()
    if op == "gt":
        return column > bind()
    if op == "gte":
        return column >= bind()
    if op == "in":
        return column.in_(bind(expanding=True))
    if op == "not_in":
        return column.not_in(bind(expanding=True))
    if op == "between":
        low = bind()
        return column.between(low, bind())
    if op == "ilike":
        if dialect == "sqlite":
            return column.like(bind(pattern=True), escape=SQL_ESCAPE)
        return column.ilike(bind(pattern=True), escape=SQL_ESCAPE)
    if dialect == "sqlite":
        return column.op("GLOB", is_comparison=True)(bind(pattern=True))
    return column.like(bind(pattern=True), escape=SQL_ESCAPE)


def _name(params: dict[str, Any]) -> str:
    return f"dk_p{len(params)}"


class StatementCache:
    """A bounded map from statement shape to the statement built for it, least recently used
    first out: shapes come from code (filter names, sorts), but a hostile caller could vary
    them, so the map never grows past ``size``."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._statements: dict[Hashable, sa.Select[Any]] = {}

    def get(self, key: Hashable) -> sa.Select[Any] | None:
        statements = self._statements
        statement = statements.pop(key, None)
        if statement is not None:
            statements[key] = statement  # most recently used last
        return statement

    def put(self, key: Hashable, statement: sa.Select[Any]) -> None:
        statements = self._statements
        while len(statements) >= self._size:
            try:
                del statements[next(iter(statements))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                break
        statements[key] = statement

    def __len__(self) -> int:
        return len(self._statements)
