"""Everything a repository decides without I/O: its model and allow-lists, how read arguments
become one checked condition and sort order, and the statements that follow from them.

Shared by `AsyncRepository`, `Repository` and the in-memory repositories, which differ only in
how they run what is decided here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import raiseload

from dalkit.errors import ConfigurationError, InvalidFilterError, InvalidSortError
from dalkit.query.bound import (
    LIMIT_PARAM,
    OFFSET_PARAM,
    StatementCache,
    bound_condition,
    shape_of,
)
from dalkit.query.cursor import CursorCodec
from dalkit.query.fields import CoercionError, FieldInfo, ModelInfo, model_info
from dalkit.query.inputs import held_ident, key_refusal, resolve_allowed
from dalkit.query.loading import LoadInput, eager_options
from dalkit.query.pagination import KeysetWindow, check_keyset_keys
from dalkit.query.soft_delete import hide_deleted, is_soft_deletable
from dalkit.query.sorting import SortInput, SortKey, order_by_clauses, parse_sort, with_tiebreaker
from dalkit.query.specs import (
    MAX_INPUT_LENGTH,
    Condition,
    FilterParser,
    Group,
    Node,
    Spec,
    search_group,
)

__all__ = ["QueryPlan", "Read", "RepositoryBase", "pick_sort"]

ModelT = TypeVar("ModelT")

_SORTABLE_KINDS = frozenset({"int", "float", "decimal", "str", "datetime", "date", "time"})
_SORTABLE_KINDS |= {"bool", "uuid"}
#: longest load path (``posts.comments.author``) followed
MAX_LOAD_DEPTH = 4
#: sort texts whose parsed keys a repository class keeps (valid ones only: bad ones raise)
_SORTS_KEPT = 256


class RepositoryBase(Generic[ModelT]):
    """Configuration shared by every repository flavour (class attributes of a subclass).

    Attributes:
        model: The mapped class, taken from ``Repository[Model]`` when not set.
        filterable: Fields user input may filter on (default: every comparable column).
        sortable: Fields user input may sort by (default: every orderable column).
        searchable: Fields ``search()`` looks in (default: every text column).
        max_page_size: The largest ``per_page`` and ``limit`` accepted.
        max_input_length: The longest filter or search text accepted.
        default_sort: The order of a read that names none; the primary key always ends an
            order, so pages are stable.
        cursor_secret: The secret keyset cursors are encrypted with (AES-GCM under an
            HKDF-derived key; at least 16 bytes). When ``None``, the SQL repositories use the
            database's ``secret_key`` (or ``DALKIT_SECRET_KEY``) and ``paginate_cursor()``
            raises `ConfigurationError` if neither is set; the in-memory ones use a random key
            of the process.
        strict_loading: Make a lazy relationship load raise instead of running a query.
        cache_ttl: Seconds the SQL repositories' reads stay in the database's query cache;
            ``None``: not cached.
    """

    model: ClassVar[type[Any]]
    filterable: ClassVar[Collection[str] | None] = None
    sortable: ClassVar[Collection[str] | None] = None
    searchable: ClassVar[Collection[str] | None] = None
    max_page_size: ClassVar[int] = 100
    #: the longest filter or search text accepted; longer input is refused up front
    max_input_length: ClassVar[int] = MAX_INPUT_LENGTH
    default_sort: ClassVar[SortInput | None] = None
    cursor_secret: ClassVar[bytes | str | None] = None
    strict_loading: ClassVar[bool] = False
    #: seconds the SQL repositories' reads stay in the database's query cache (dalkit.cache);
    #: None: not cached
    cache_ttl: ClassVar[float | None] = None

    _plan_cache: ClassVar[QueryPlan | None] = None
    _q: QueryPlan  # the class's plan, set by each repository's __init__

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


@dataclasses.dataclass(frozen=True, eq=False)
class Read:
    """One checked read, as the backends receive it: the condition, the order, the window of
    rows (``window`` seeks past a keyset cursor) and the loader options for SQL."""

    where: Group
    keys: tuple[SortKey, ...]
    limit: int | None = None
    offset: int | None = None
    options: tuple[Any, ...] = ()
    window: KeysetWindow | None = None


def pick_sort(sort: SortInput | None, order_by: SortInput | None) -> SortInput | None:
    """``sort``, or ``order_by``, its former name in ``list``, ``first`` and ``search``."""
    if order_by is None:
        return sort
    if sort is not None:
        raise InvalidSortError("pass sort, not order_by too", name="order_by", allowed=("sort",))
    return order_by


class QueryPlan:
    """A repository class's checked configuration and its statement builders."""

    def __init__(self, repository: type[RepositoryBase[Any]]) -> None:
        info = model_info(repository.model)
        self.info = info
        self.model = info.model
        self.soft_delete = is_soft_deletable(info.model)
        self.hides_deleted = _reaches_soft_delete(info)
        owner = repository.__name__
        self.max_input_length = repository.max_input_length
        comparable = [n for n, f in info.fields.items() if f.kind != "other"]
        self.spec_filters = FilterParser(info, comparable, self.max_input_length)
        self.user_filters = FilterParser(
            info,
            resolve_allowed(owner, "filterable", repository.filterable, info, comparable),
            self.max_input_length,
        )
        sortable = [n for n, f in info.fields.items() if f.kind in _SORTABLE_KINDS]
        self.sortable: dict[str, FieldInfo] = {
            n: info.fields[n]
            for n in resolve_allowed(owner, "sortable", repository.sortable, info, sortable)
        }
        searchable = [n for n, f in info.fields.items() if f.kind == "str"]
        self.searchable: dict[str, FieldInfo] = {
            n: info.fields[n]
            for n in resolve_allowed(owner, "searchable", repository.searchable, info, searchable)
        }
        if not isinstance(repository.max_page_size, int) or repository.max_page_size < 1:
            raise ConfigurationError(f"{repository.__name__}.max_page_size must be positive")
        self.max_page_size = repository.max_page_size
        self.strict_loading = repository.strict_loading
        self.default_keys = with_tiebreaker(
            parse_sort(repository.default_sort, info.fields, owner=owner), info.primary_key
        )
        self.codec = CursorCodec(f"{info.table.fullname}", repository.cursor_secret)
        self._get_statements: dict[bool, sa.Select[Any]] = {}
        self._default_options: dict[bool, tuple[Any, ...]] = {}
        self._statements = StatementCache()
        self._sorts: dict[str, tuple[SortKey, ...]] = {}

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
                raise TypeError(
                    f"reads take Spec instances positionally, got {type(spec).__name__}: pass "
                    "page, per_page, limit, fields and the like by keyword"
                )
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
        return search_group(chosen, text, self.max_input_length)

    def sort_keys(self, order_by: SortInput | None) -> tuple[SortKey, ...]:
        if order_by is None:
            return self.default_keys
        if isinstance(order_by, str):
            # parsed once per text: parsing "-created_at" cost ~15 us a read (bench/peers page)
            keys = self._sorts.get(order_by)
            if keys is None:
                keys = with_tiebreaker(parse_sort(order_by, self.sortable), self.info.primary_key)
                if len(self._sorts) >= _SORTS_KEPT:
                    self._sorts.clear()
                self._sorts[order_by] = keys
            return keys
        return with_tiebreaker(parse_sort(order_by, self.sortable), self.info.primary_key)

    def read(
        self,
        specs: Sequence[Spec],
        filters: Mapping[str, Any],
        include_deleted: bool,
        keys: tuple[SortKey, ...],
        load: LoadInput | None = None,
        *,
        search: Node | None = None,
        limit: int | None = None,
        offset: int | None = None,
        window: KeysetWindow | None = None,
    ) -> Read:
        """The checked read: condition, order, window and what to load."""
        extra = () if search is None else (search,)
        where = self.where(specs, filters, include_deleted, *extra)
        if load is None:
            options = self.default_options(include_deleted)
        else:
            options = tuple(self.loader_options(load, include_deleted))
        return Read(where, keys, limit, offset, options, window)

    def keyset(
        self, sort: SortInput | None, after: object, before: object, codec: CursorCodec
    ) -> tuple[KeysetWindow, bool]:
        """The keyset window for a cursor read, and whether a boundary cursor was given."""
        keys = self.sort_keys(sort)
        check_keyset_keys(keys)
        if after is not None and before is not None:
            raise InvalidFilterError("pass after or before, not both", name="before")
        cursor = after if after is not None else before
        boundary = None if cursor is None else codec.decode(cursor, keys)
        return KeysetWindow(keys, boundary, backward=before is not None), cursor is not None

    def ident(self, ident: Any) -> tuple[Any, ...]:
        try:
            return held_ident(self.info, ident)
        except CoercionError as exc:
            raise InvalidFilterError(key_refusal(self.info, ident, exc), name="id") from None

    # --- statements -------------------------------------------------------------------------

    def select(self, read: Read, dialect: str) -> sa.Select[Any]:
        statement = sa.select(self.model).where(read.where.to_sql(dialect))
        seek = None if read.window is None else read.window.condition()
        if seek is not None:
            statement = statement.where(seek)
        if read.keys:
            statement = statement.order_by(*order_by_clauses(read.keys))
        if read.limit is not None:
            statement = statement.limit(read.limit)
        if read.offset:
            statement = statement.offset(read.offset)
        return statement.options(*read.options)

    def bound_select(self, read: Read, dialect: str) -> tuple[sa.Select[Any], dict[str, Any]]:
        """The statement of [`select`][dalkit.repository.base.QueryPlan.select] with its values
        as parameters: built once per shape (fields, operators, sort, which of limit, offset
        and a cursor are given) and reused; built each time with eager loads."""
        defaults, window = self._default_options, read.window
        plain = any(read.options is o for o in defaults.values())
        if not plain:
            return self.select(read, dialect), {}
        params: dict[str, Any] = {}  # the filter's first: bound_condition() counts from dk_p0
        shape = shape_of(read.where, dialect, params)
        seeks = window is not None and window.boundary is not None
        params.update(window.seek_params() if window else ())
        sort = tuple((key.field.name, key.descending) for key in read.keys)
        deleted = read.options is defaults.get(True)
        key = (dialect, shape, sort, read.limit is not None, bool(read.offset), deleted, seeks)
        statement = self._statements.get(key)
        if statement is None:
            statement = self._bound_statement(read, dialect)
            self._statements.put(key, statement)
        if read.limit is not None:
            params[LIMIT_PARAM] = read.limit
        if read.offset:
            params[OFFSET_PARAM] = read.offset
        return statement, params

    def _bound_statement(self, read: Read, dialect: str) -> sa.Select[Any]:
        statement = sa.select(self.model).where(bound_condition(read.where, dialect, []))
        seek = None if read.window is None else read.window.bound_condition()
        statement = statement if seek is None else statement.where(seek)
        if read.keys:
            statement = statement.order_by(*order_by_clauses(read.keys))
        if read.limit is not None:
            statement = statement.limit(sa.bindparam(LIMIT_PARAM, type_=sa.BigInteger))
        if read.offset:
            statement = statement.offset(sa.bindparam(OFFSET_PARAM, type_=sa.BigInteger))
        return statement.options(*read.options)

    def default_options(self, include_deleted: bool) -> tuple[Any, ...]:
        """The loader options of a read without ``load``, built once so statements reuse."""
        options = self._default_options.get(include_deleted)
        if options is None:
            options = tuple(self.loader_options(None, include_deleted))
            self._default_options[include_deleted] = options
        return options

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

    def loader_options(self, load: LoadInput | None, include_deleted: bool) -> list[Any]:
        """Eager loads for ``load`` (paths, or paths mapped to a strategy), ``raiseload``
        under strict loading, and the criteria hiding soft-deleted rows in everything the
        statement loads."""
        options: list[Any] = list(eager_options(self.info, load, strict=self.strict_loading))
        if self.strict_loading:
            options.append(raiseload("*"))
        if self.hides_deleted and not include_deleted:
            options.append(hide_deleted())
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
