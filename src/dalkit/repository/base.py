"""Everything a repository decides without I/O: its model and allow-lists, how read arguments
become one checked condition and sort order, and the statements that follow from them.

Shared by :class:`~dalkit.AsyncRepository`, :class:`~dalkit.Repository` and the in-memory
repositories, which differ only in how they run what is decided here.
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, raiseload, selectinload
from sqlalchemy.orm.strategy_options import _AbstractLoad

from dalkit.errors import ConfigurationError, InvalidFilterError, InvalidQueryError
from dalkit.query.cursor import CursorCodec
from dalkit.query.fields import CoercionError, FieldInfo, ModelInfo, model_info
from dalkit.query.pagination import KeysetWindow, check_keyset_keys
from dalkit.query.soft_delete import hide_deleted, is_soft_deletable
from dalkit.query.sorting import SortInput, SortKey, order_by_clauses, parse_sort, with_tiebreaker
from dalkit.query.specs import _ANY_STRING, Condition, FilterParser, Group, Node, Spec

__all__ = ["QueryPlan", "RepositoryBase"]

ModelT = TypeVar("ModelT")

_SORTABLE_KINDS = frozenset({"int", "float", "decimal", "str", "datetime", "date", "time"})
_SORTABLE_KINDS |= {"bool", "uuid"}
#: longest load path (``posts.comments.author``) followed
MAX_LOAD_DEPTH = 4


class RepositoryBase(Generic[ModelT]):
    """Configuration shared by every repository flavour; subclass one of them, not this.

    ``filterable``, ``sortable`` and ``searchable`` narrow what user input may name (default:
    every mapped column that can be compared, ordered or searched); ``max_page_size`` caps
    ``per_page`` and ``limit``; ``default_sort`` applies when a read names no order (the primary
    key always ends an order, so pages are stable); ``cursor_secret`` signs keyset cursors (a
    random per-process key when ``None``); ``strict_loading`` makes any lazy relationship load
    raise instead of running a hidden query.
    """

    model: ClassVar[type[Any]]
    filterable: ClassVar[Collection[str] | None] = None
    sortable: ClassVar[Collection[str] | None] = None
    searchable: ClassVar[Collection[str] | None] = None
    max_page_size: ClassVar[int] = 100
    default_sort: ClassVar[SortInput | None] = None
    cursor_secret: ClassVar[bytes | str | None] = None
    strict_loading: ClassVar[bool] = False

    _plan_cache: ClassVar[QueryPlan | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, RepositoryBase):
                args = typing.get_args(base)
                if args and isinstance(args[0], type):
                    cls.model = args[0]
        cls._plan_cache = None

    @classmethod
    def _plan(cls) -> QueryPlan:
        # built on first use: mappers may reference classes defined after the repository
        plan = cls.__dict__.get("_plan_cache")
        if plan is None:
            if not isinstance(getattr(cls, "model", None), type):
                raise ConfigurationError(
                    f"{cls.__name__} has no model: subclass it as {cls.__name__}(Repository[Model])"
                )
            plan = QueryPlan(cls)
            cls._plan_cache = plan
        return plan


class QueryPlan:
    """A repository class's checked configuration and its statement builders."""

    def __init__(self, repository: type[RepositoryBase[Any]]) -> None:
        info = model_info(repository.model)
        self.info = info
        self.model = info.model
        self.soft_delete = is_soft_deletable(info.model)
        self.hides_deleted = _reaches_soft_delete(info)
        comparable = [n for n, f in info.fields.items() if f.kind != "other"]
        self.spec_filters = FilterParser(info, comparable)
        self.user_filters = FilterParser(
            info, _names(repository, "filterable", repository.filterable, info, comparable)
        )
        sortable = [n for n, f in info.fields.items() if f.kind in _SORTABLE_KINDS]
        self.sortable: dict[str, FieldInfo] = {
            n: info.fields[n]
            for n in _names(repository, "sortable", repository.sortable, info, sortable)
        }
        searchable = [n for n, f in info.fields.items() if f.kind == "str"]
        self.searchable: dict[str, FieldInfo] = {
            n: info.fields[n]
            for n in _names(repository, "searchable", repository.searchable, info, searchable)
        }
        if not isinstance(repository.max_page_size, int) or repository.max_page_size < 1:
            raise ConfigurationError(f"{repository.__name__}.max_page_size must be positive")
        self.max_page_size = repository.max_page_size
        self.strict_loading = repository.strict_loading
        self.default_keys = with_tiebreaker(
            parse_sort(repository.default_sort, info.fields), info.primary_key
        )
        self.codec = CursorCodec(f"{info.table.fullname}", repository.cursor_secret)
        self._get_statements: dict[bool, sa.Select[Any]] = {}

    # --- conditions -------------------------------------------------------------------------

    def where(
        self,
        specs: Sequence[Spec],
        filters: Mapping[str, Any],
        include_deleted: bool = False,
        *extra: Node,
    ) -> Group:
        """The read's whole condition: specs, user filters, and hiding of deleted rows."""
        parts: list[Node] = list(extra)
        for spec in specs:
            if not isinstance(spec, Spec):
                raise TypeError(f"expected Spec instances, got {type(spec).__name__}")
            parts.append(spec.resolve(self.spec_filters))
        parts.extend(self.user_filters.parse(filters).children)
        if self.soft_delete and not include_deleted:
            parts.append(Condition(self.info.fields["deleted_at"], "isnull", True))
        return Group("and", tuple(parts))

    def search_condition(self, text: object, fields: Iterable[str] | None) -> Group:
        """Case-insensitive (ASCII) substring match of ``text`` in any of ``fields``."""
        if not isinstance(text, str):
            raise InvalidFilterError("search text must be a string", name="text")
        if "\x00" in text:
            raise InvalidFilterError("search text cannot contain NUL characters", name="text")
        if fields is None:
            chosen = list(self.searchable.values())
        elif isinstance(fields, str):
            raise InvalidFilterError("fields must be a list of names", name=fields)
        else:
            chosen = []
            for name in fields:
                field = self.searchable.get(name) if isinstance(name, str) else None
                if field is None:
                    raise InvalidFilterError(
                        f"unknown or disallowed search field {str(name)[:60]!r}",
                        name=str(name),
                        allowed=sorted(self.searchable),
                    )
                chosen.append(field)
        tokens: list[str | int] = [_ANY_STRING, *text, _ANY_STRING]
        return Group("or", tuple(Condition(f, "ilike", tokens) for f in chosen))

    def sort_keys(self, order_by: SortInput | None) -> tuple[SortKey, ...]:
        if order_by is None:
            return self.default_keys
        return with_tiebreaker(parse_sort(order_by, self.sortable), self.info.primary_key)

    def keyset(
        self, sort: SortInput | None, after: object, before: object
    ) -> tuple[KeysetWindow, bool]:
        """The keyset window for a cursor read, and whether a boundary cursor was given."""
        keys = self.sort_keys(sort)
        check_keyset_keys(keys)
        if after is not None and before is not None:
            raise InvalidFilterError("pass after or before, not both", name="before")
        cursor = after if after is not None else before
        boundary = None if cursor is None else self.codec.decode(cursor, keys)
        return KeysetWindow(keys, boundary, backward=before is not None), cursor is not None

    def ident(self, ident: Any) -> tuple[Any, ...]:
        try:
            return self.info.ident_tuple(ident)
        except CoercionError as exc:
            raise InvalidFilterError(f"bad primary key {ident!r:.60}: {exc}", name="id") from None

    # --- statements -------------------------------------------------------------------------

    def select(
        self,
        where: Group,
        dialect: str,
        keys: Sequence[SortKey] = (),
        limit: int | None = None,
        offset: int | None = None,
        load: Sequence[str] | None = None,
        include_deleted: bool = False,
    ) -> sa.Select[Any]:
        statement = sa.select(self.model).where(where.to_sql(dialect))
        if keys:
            statement = statement.order_by(*order_by_clauses(keys))
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        return statement.options(*self.loader_options(load, include_deleted))

    def get_statement(self, include_deleted: bool = False) -> sa.Select[Any]:
        """``SELECT ... WHERE pk = :pk0``, built once per repository class: building a select
        costs about as much as running a cached one."""
        statement = self._get_statements.get(include_deleted)
        if statement is None:
            condition = sa.and_(
                *(f.column == sa.bindparam(f"pk{i}") for i, f in enumerate(self.info.primary_key))
            )
            if self.soft_delete and not include_deleted:
                condition = sa.and_(condition, self.info.fields["deleted_at"].column.is_(None))
            statement = sa.select(self.model).where(condition)
            statement = statement.options(*self.loader_options(None, include_deleted))
            self._get_statements[include_deleted] = statement
        return statement

    def select_many(self, keys: Sequence[tuple[Any, ...]], include_deleted: bool) -> sa.Select[Any]:
        pk = [f.column for f in self.info.primary_key]
        condition: sa.ColumnElement[bool] = (
            pk[0].in_([k[0] for k in keys]) if len(pk) == 1 else sa.tuple_(*pk).in_(keys)
        )
        if self.soft_delete and not include_deleted:
            condition = sa.and_(condition, self.info.fields["deleted_at"].column.is_(None))
        statement = sa.select(self.model).where(condition)
        return statement.options(*self.loader_options(None, include_deleted))

    def count_statement(self, where: Group, dialect: str) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(self.info.table).where(where.to_sql(dialect))

    def exists_statement(self, where: Group, dialect: str) -> sa.Select[Any]:
        return (
            sa.select(sa.literal(1))
            .select_from(self.info.table)
            .where(where.to_sql(dialect))
            .limit(1)
        )

    def loader_options(self, load: Sequence[str] | None, include_deleted: bool) -> list[Any]:
        """Eager loads for ``load`` paths, ``raiseload`` under strict loading, and the criteria
        hiding soft-deleted rows in everything the statement loads."""
        options: list[Any] = []
        if load is not None:
            if isinstance(load, str):
                raise InvalidQueryError("load must be a list of paths", name=load)
            for path in load:
                options.extend(self._load_path(path))
        if self.strict_loading:
            options.append(raiseload("*"))
        if self.hides_deleted and not include_deleted:
            options.append(hide_deleted())
        return options

    def _load_path(self, path: object) -> list[_AbstractLoad]:
        if not isinstance(path, str) or not path or path.count(".") >= MAX_LOAD_DEPTH:
            raise InvalidQueryError(f"bad load path {str(path)[:60]!r}", name=str(path))
        options: list[_AbstractLoad] = []
        option: _AbstractLoad | None = None
        info = self.info
        for name in path.split("."):
            relationship = info.relationships.get(name)
            if relationship is None:
                raise InvalidQueryError(
                    f"{info.name} has no relationship {name[:60]!r} (in load path {path[:80]!r})",
                    name=path,
                    allowed=sorted(info.relationships),
                )
            attribute = getattr(info.model, name)
            # to-one: one JOIN adds no rows; collections: a second SELECT ... IN avoids
            # multiplying the parent rows by the children
            if option is None:
                option = selectinload(attribute) if relationship.uselist else joinedload(attribute)
            elif relationship.uselist:
                option = option.selectinload(attribute)
            else:
                option = option.joinedload(attribute)
            if self.strict_loading:
                # the loaded objects' own relationships stay strict too
                options.append(option.raiseload("*"))
            info = model_info(relationship.mapper.class_)
        assert option is not None
        options.append(option)
        return options


def _reaches_soft_delete(info: ModelInfo) -> bool:
    seen: set[type[Any]] = set()
    pending = [info.mapper]
    while pending:
        mapper = pending.pop()
        if mapper.class_ in seen:
            continue
        seen.add(mapper.class_)
        if is_soft_deletable(mapper.class_):
            return True
        pending.extend(r.mapper for r in mapper.relationships)
    return False


def _names(
    repository: type[Any],
    attribute: str,
    configured: Collection[str] | None,
    info: ModelInfo,
    usable: list[str],
) -> list[str]:
    if configured is None:
        return usable
    if isinstance(configured, str):
        raise ConfigurationError(f"{repository.__name__}.{attribute} must be a list of names")
    names = list(configured)
    wrong = [n for n in names if n not in usable]
    if wrong:
        raise ConfigurationError(
            f"{repository.__name__}.{attribute} names {', '.join(map(repr, wrong))}, which "
            f"{info.name} has no usable column for; choose from {', '.join(usable)}"
        )
    return names
