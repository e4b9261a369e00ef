"""AsyncRepositoryReads: the read half of the repository API (get, list, find, count, search,
paginate...), checked here and run by the backend's read hooks. The async source of ``reads.py``.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterable, Sequence
from typing import Any

from dalkit.errors import NotFoundError
from dalkit.query.cursor import CursorCodec
from dalkit.query.inputs import secret_key
from dalkit.query.loading import LoadInput
from dalkit.query.pagination import CursorPage, Page, check_limit, check_page, check_window
from dalkit.query.sorting import SortInput
from dalkit.query.specs import Group, Spec
from dalkit.repository.base import ModelT, Read, RepositoryBase, pick_sort

#: primary keys per ``IN (...)`` of ``get_many`` and per batch of ``update_many``
IN_CHUNK = 500


class AsyncRepositoryReads(RepositoryBase[ModelT], abc.ABC):
    """The reads of [`AsyncAbstractRepository`][dalkit.AsyncAbstractRepository], which inherits
    them; a backend implements the ``_``-prefixed read hooks at the end of this class."""

    # --- reads ------------------------------------------------------------------------------

    async def get(self, ident: Any, *, include_deleted: bool = False) -> ModelT:
        """The entity with primary key ``ident``.

        Args:
            ident: The primary key (a tuple for a composite one).
            include_deleted: Include soft-deleted entities.

        Returns:
            The entity.

        Raises:
            NotFoundError: When there is none.
        """
        entity = await self._get(self._q.ident(ident), include_deleted)
        if entity is None:
            raise NotFoundError(self._q.info.name, ident, secret=secret_key(self._q.info))
        return entity

    async def get_or_none(self, ident: Any, *, include_deleted: bool = False) -> ModelT | None:
        """The entity with primary key ``ident``, or None.

        Args:
            ident: The primary key (a tuple for a composite one).
            include_deleted: Include soft-deleted entities.

        Returns:
            The entity, or None when there is none.
        """
        return await self._get(self._q.ident(ident), include_deleted)

    async def get_many(
        self, idents: Iterable[Any], *, include_deleted: bool = False
    ) -> builtins.list[ModelT]:
        """The entities with these primary keys, read in chunks of ``IN (...)``.

        Args:
            idents: The primary keys.
            include_deleted: Include soft-deleted entities.

        Returns:
            The entities in the order given; missing ones are skipped.
        """
        keys = builtins.list(dict.fromkeys(self._q.ident(i) for i in idents))
        found: dict[tuple[Any, ...], ModelT] = {}
        for start in range(0, len(keys), IN_CHUNK):
            found.update(await self._get_many(keys[start : start + IN_CHUNK], include_deleted))
        return [found[k] for k in keys if k in found]

    async def list(
        self,
        *specs: Spec,
        sort: SortInput | None = None,
        limit: int | None = None,
        offset: int | None = None,
        load: LoadInput | None = None,
        include_deleted: bool = False,
        order_by: SortInput | None = None,
        **filters: Any,
    ) -> builtins.list[ModelT]:
        """Entities matching every spec and ``field__op`` filter, in ``sort`` order.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            sort: The order, ``"-created_at,id"`` or ``[("created_at", "desc")]``, held
                to ``sortable`` (default: ``default_sort``); the primary key ends it.
            limit: The most entities to return.
            offset: How many to skip.
            load: Relationship paths to eager-load (``"posts.comments"``).
            include_deleted: Include soft-deleted entities.
            order_by: The former name of ``sort``.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The entities.

        Raises:
            InvalidFilterError: For a filter on a field or operator not allowed.
            InvalidSortError: For a sort field or direction not allowed.
        """
        limit, offset = check_window(limit, offset)
        q = self._q
        keys = q.sort_keys(pick_sort(sort, order_by))
        read = q.read(specs, filters, include_deleted, keys, load, limit=limit, offset=offset)
        return await self._select(read)

    async def first(
        self,
        *specs: Spec,
        sort: SortInput | None = None,
        load: LoadInput | None = None,
        include_deleted: bool = False,
        order_by: SortInput | None = None,
        **filters: Any,
    ) -> ModelT | None:
        """The first matching entity in ``sort`` order, or None.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            sort: The order, ``"-created_at,id"`` or ``[("created_at", "desc")]``, held
                to ``sortable`` (default: ``default_sort``); the primary key ends it.
            load: Relationship paths to eager-load (``"posts.comments"``).
            include_deleted: Include soft-deleted entities.
            order_by: The former name of ``sort``.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The entity, or None when none matches.

        Raises:
            InvalidFilterError: For a filter on a field or operator not allowed.
            InvalidSortError: For a sort field or direction not allowed.
        """
        found = await self.list(
            *specs,
            sort=pick_sort(sort, order_by),
            limit=1,
            load=load,
            include_deleted=include_deleted,
            **filters,
        )
        return found[0] if found else None

    async def find(self, *specs: Spec, **filters: Any) -> builtins.list[ModelT]:
        """Entities matching the specs and ``field__op`` filters, in the default order. Every
        keyword is a filter: user input passed as ``find(**query)`` can never set ``list()``
        options such as ``include_deleted``, ``load`` or ``offset``.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The entities.

        Raises:
            InvalidFilterError: For a filter on a field or operator not allowed.
        """
        q = self._q
        return await self._select(q.read(specs, filters, False, q.sort_keys(None)))

    async def count(self, *specs: Spec, include_deleted: bool = False, **filters: Any) -> int:
        """How many entities match every spec and ``field__op`` filter.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            include_deleted: Include soft-deleted entities.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The count.

        Raises:
            InvalidFilterError: For a filter on a field or operator not allowed.
        """
        return await self._count(self._q.where(specs, filters, include_deleted))

    async def exists(self, *specs: Spec, include_deleted: bool = False, **filters: Any) -> bool:
        """Whether any entity matches every spec and ``field__op`` filter.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            include_deleted: Include soft-deleted entities.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            True when one does.

        Raises:
            InvalidFilterError: For a filter on a field or operator not allowed.
        """
        return await self._exists(self._q.where(specs, filters, include_deleted))

    async def search(
        self,
        text: str,
        *specs: Spec,
        fields: Sequence[str] | None = None,
        sort: SortInput | None = None,
        limit: int | None = None,
        include_deleted: bool = False,
        order_by: SortInput | None = None,
        **filters: Any,
    ) -> builtins.list[ModelT]:
        """Matching entities with ``text`` in any of ``fields`` (default: ``searchable``),
        ignoring ASCII case; ``%`` and ``_`` in ``text`` are plain characters.

        Args:
            text: The text to look for.
            *specs: Conditions, ANDed with each other and the filters.
            fields: Where to look, among ``searchable`` (default: all of them).
            sort: The order, ``"-created_at,id"`` or ``[("created_at", "desc")]``, held
                to ``sortable`` (default: ``default_sort``); the primary key ends it.
            limit: The most entities to return.
            include_deleted: Include soft-deleted entities.
            order_by: The former name of ``sort``.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The entities.

        Raises:
            InputTooLongError: When ``text`` is longer than ``max_input_length``.
            InvalidFilterError: For a field that is not searchable, or a bad filter.
            InvalidSortError: For a sort field or direction not allowed.
        """
        q = self._q
        found = q.search_condition(text, fields)
        limit, _ = check_window(limit, None)
        keys = q.sort_keys(pick_sort(sort, order_by))
        read = q.read(specs, filters, include_deleted, keys, search=found, limit=limit)
        return await self._select(read)

    # --- pagination -------------------------------------------------------------------------

    async def paginate(
        self,
        *specs: Spec,
        page: int = 1,
        per_page: int = 20,
        sort: SortInput | None = None,
        spec: Spec | None = None,
        load: LoadInput | None = None,
        include_deleted: bool = False,
        **filters: Any,
    ) -> Page[ModelT]:
        """One page of the matching entities, with the total count.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            page: The page number, from 1.
            per_page: The page size, up to ``max_page_size``.
            sort: The order, ``"-created_at,id"`` or ``[("created_at", "desc")]``, held
                to ``sortable`` (default: ``default_sort``); the primary key ends it.
            spec: The former way to pass one spec.
            load: Relationship paths to eager-load (``"posts.comments"``).
            include_deleted: Include soft-deleted entities.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The page: items, total, pages, has_next.

        Raises:
            QueryInputError: For a page or page size out of range.
            InvalidFilterError: For a filter on a field or operator not allowed.
            InvalidSortError: For a sort field or direction not allowed.
        """
        q = self._q
        number, size, offset = check_page(page, per_page, q.max_page_size)
        keys = q.sort_keys(sort)
        read = q.read(
            _specs(specs, spec), filters, include_deleted, keys, load, limit=size, offset=offset
        )
        total = await self._count(read.where)
        items = await self._select(read) if offset < total else []
        return Page.build(items, total, number, size)

    async def paginate_cursor(
        self,
        *specs: Spec,
        limit: int = 20,
        after: str | None = None,
        before: str | None = None,
        sort: SortInput | None = None,
        spec: Spec | None = None,
        load: LoadInput | None = None,
        include_deleted: bool = False,
        **filters: Any,
    ) -> CursorPage[ModelT]:
        """Keyset pagination: up to ``limit`` entities after (or before) a cursor taken from a
        previous page; the primary key is added to ``sort`` as the tie-breaker.

        Args:
            *specs: Conditions, ANDed with each other and the filters.
            limit: The page size, up to ``max_page_size``.
            after: The ``next_cursor`` of the previous page.
            before: The ``prev_cursor`` of the next page.
            sort: The order, ``"-created_at,id"`` or ``[("created_at", "desc")]``, held
                to ``sortable`` (default: ``default_sort``); the primary key ends it.
            spec: The former way to pass one spec.
            load: Relationship paths to eager-load (``"posts.comments"``).
            include_deleted: Include soft-deleted entities.
            **filters: ``field__op`` filters (``age__gte=18``), held to ``filterable``.

        Returns:
            The page: items, next_cursor, prev_cursor, has_more.

        Raises:
            InvalidCursorError: For a cursor that is forged, stale or of another listing.
            ConfigurationError: When no cursor secret is configured (see ``cursor_secret``).
            QueryInputError: For a limit out of range.
            InvalidFilterError: For a filter on a field or operator not allowed.
            InvalidSortError: For a sort field or direction not allowed.
        """
        q = self._q
        codec = self._cursor_codec()
        window, had_boundary = q.keyset(sort, after, before, codec)
        size = check_limit(limit, q.max_page_size)
        read = q.read(
            _specs(specs, spec),
            filters,
            include_deleted,
            window.read_keys,
            load,
            limit=size + 1,
            window=window,
        )
        rows = await self._select(read)
        return window.page(rows, size, lambda e: codec.encode(window.keys, e), had_boundary)

    # --- read hooks ------------------------------------------------------------------------

    @abc.abstractmethod
    def _cursor_codec(self) -> CursorCodec:
        """The codec of keyset cursors, keyed with the configured secret."""

    @abc.abstractmethod
    async def _get(self, key: tuple[Any, ...], include_deleted: bool) -> ModelT | None:
        """The visible entity with this primary key, or None."""

    @abc.abstractmethod
    async def _get_many(
        self, keys: Sequence[tuple[Any, ...]], include_deleted: bool
    ) -> dict[tuple[Any, ...], ModelT]:
        """The visible entities with these keys (up to `IN_CHUNK`), by key."""

    @abc.abstractmethod
    async def _select(self, read: Read) -> builtins.list[ModelT]:
        """The entities of a checked read, in its order and window."""

    @abc.abstractmethod
    async def _count(self, where: Group) -> int: ...

    @abc.abstractmethod
    async def _exists(self, where: Group) -> bool: ...


def _specs(specs: tuple[Spec, ...], spec: Spec | None) -> tuple[Spec, ...]:
    return specs if spec is None else (*specs, spec)
