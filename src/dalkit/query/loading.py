"""Eager loading from a read's ``load`` argument: relationship paths checked against the
mappers, each loaded with a chosen or default strategy. No I/O.

``load=["author", "comments.author"]`` picks per relationship: to-one is JOINed (no extra rows),
collections use a second ``SELECT ... IN`` (no multiplied parent rows).
``load={"author": "joined", "comments": "selectin"}`` chooses per path; a path's parents not
named in the mapping keep the default. A relationship the statement already joins (a filter on
it) is filled from that join with ``contains_eager`` instead of being joined a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from sqlalchemy.orm import contains_eager, joinedload, selectinload, subqueryload
from sqlalchemy.orm.strategy_options import _AbstractLoad

from dalkit.errors import InvalidQueryError
from dalkit.query.fields import ModelInfo, model_info

__all__ = ["MAX_LOAD_DEPTH", "STRATEGIES", "LoadInput", "eager_options"]

#: ``["author", "posts.comments"]`` or ``{"author": "joined", "posts": "selectin"}``
LoadInput: TypeAlias = "Sequence[str] | Mapping[str, str]"
#: longest load path (``posts.comments.author``) followed
MAX_LOAD_DEPTH = 4
#: most paths one read may load
MAX_LOAD_PATHS = 32
_LOADERS: dict[str, Callable[..., _AbstractLoad]] = {
    "joined": joinedload,
    "selectin": selectinload,
    "subquery": subqueryload,
}
STRATEGIES = tuple(_LOADERS)


def eager_options(
    info: ModelInfo,
    load: LoadInput | None,
    *,
    strict: bool = False,
    joined: Mapping[str, Any] | None = None,
) -> list[_AbstractLoad]:
    """Loader options for ``load`` on ``info``'s model; raises InvalidQueryError for an unknown
    relationship, path or strategy.

    ``strict`` keeps the loaded objects' own relationships raising on lazy access. ``joined``
    maps the paths the statement already joins to the entity they are joined as (the mapped
    class, or an ``aliased()`` one), which ``contains_eager`` then fills.
    """
    if load is None:
        return []
    strategies = _strategies(load)
    options: list[_AbstractLoad] = []
    for path in strategies:
        options.extend(_path_options(info, path, strategies, strict, joined or {}))
    return options


def _strategies(load: object) -> dict[str, str | None]:
    """Each path with its chosen strategy (None: the default)."""
    if isinstance(load, str | bytes) or not isinstance(load, Sequence | Mapping):
        raise InvalidQueryError(
            "load must be a list of relationship paths or a {path: strategy} mapping",
            name=str(load)[:80],
        )
    if len(load) > MAX_LOAD_PATHS:
        raise InvalidQueryError(f"at most {MAX_LOAD_PATHS} load paths", name=str(load)[:80])
    if isinstance(load, Sequence):
        return {_path(p): None for p in load}
    chosen: dict[str, str | None] = {}
    for path, strategy in load.items():
        if not isinstance(strategy, str) or strategy not in _LOADERS:
            raise InvalidQueryError(
                f"unknown load strategy {str(strategy)[:40]!r} for {str(path)[:60]!r}",
                name=str(strategy)[:80],
                allowed=STRATEGIES,
            )
        chosen[_path(path)] = strategy
    return chosen


def _path(path: object) -> str:
    if not isinstance(path, str) or not path or path.count(".") >= MAX_LOAD_DEPTH:
        raise InvalidQueryError(f"bad load path {str(path)[:60]!r}", name=str(path)[:200])
    return path


def _path_options(
    info: ModelInfo,
    path: str,
    strategies: Mapping[str, str | None],
    strict: bool,
    joined: Mapping[str, Any],
) -> list[_AbstractLoad]:
    options: list[_AbstractLoad] = []
    option: _AbstractLoad | None = None
    names = path.split(".")
    for depth, name in enumerate(names):
        relationship = info.relationships.get(name)
        if relationship is None:
            raise InvalidQueryError(
                f"{info.name} has no relationship {name[:60]!r} (in load path {path[:80]!r})",
                name=path,
                allowed=sorted(info.relationships),
            )
        attribute = getattr(info.model, name)
        prefix = ".".join(names[: depth + 1])
        if prefix in joined and _all_joined(names, depth, joined):
            target = joined[prefix]
            attribute = (
                attribute if target is relationship.mapper.class_ else attribute.of_type(target)
            )
            option = (
                contains_eager(attribute) if option is None else option.contains_eager(attribute)
            )
        else:
            strategy = strategies.get(prefix) or ("selectin" if relationship.uselist else "joined")
            if option is None:
                option = _LOADERS[strategy](attribute)
            else:
                option = getattr(option, f"{strategy}load")(attribute)
        if strict:
            # the loaded objects' own relationships stay strict too
            options.append(option.raiseload("*"))
        info = model_info(relationship.mapper.class_)
    assert option is not None
    options.append(option)
    return options


def _all_joined(names: list[str], depth: int, joined: Mapping[str, Any]) -> bool:
    # contains_eager can only continue a chain whose parents came from joins too
    return all(".".join(names[: d + 1]) in joined for d in range(depth))
