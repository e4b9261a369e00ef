"""Cache keys: a digest of the statement compiled for the database's dialect, its bound
parameters and its loader options; never of SQL with the values rendered into it. A read of a
tenant-scoped table is keyed per tenant too: tenant scoping gives the same statement each
tenant's own rows (`tenant_part`), and so is a read under a ``schema_translate_map``
(`schema_part`), and every entry of a database whose URL sets session options such as the
``search_path``, or names a SQLite file by a relative path (`namespace_part`)."""

from __future__ import annotations

import hashlib
import os
import re
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.engine import URL, Dialect

from dalkit.config import is_memory_sqlite
from dalkit.query.tenant_context import current_tenant, scoping_off
from dalkit.query.tenant_guard import names_scoped

__all__ = ["ADDRESS", "UNKEYABLE", "KeyBuilder", "namespace_part", "schema_part", "tenant_part"]

#: a memory address in a default repr ("<x.Y object at 0x7f...>"): it differs between
#: processes, and another object may later have it; the rest of an option's repr does not
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
#: what the key of a read starts with when a bound value's only text is a memory address: such
#: a read is never looked up nor stored (dalkit.cache.bypass), as no key can tell it apart
UNKEYABLE = "\x00unkeyable:"
_TRANSLATE = "schema_translate_map"
# what a key's digest is remembered for: a hit of the same read again (the usual case) then
# does not hash it, ~1 us of a memory hit's ~40 (timeit); short ones only, so that the
# memo holds a few MiB at most
_MAX_DIGESTS = 10_000
_MAX_DIGESTED_CHARS = 512
_NO_OPTIONS: Mapping[str, Any] = {}


class KeyBuilder:
    """Builds keys for one dialect, remembering the compiled SQL of each statement shape
    (SQLAlchemy's own cache key, values left out) so a hit compiles nothing.

    Args:
        dialect: The database's dialect: the SQL compiled for it is part of the key.
        namespace: What every key starts with (the backend's prefix and the database id).
        max_shapes: How many statement shapes to remember before starting over.
    """

    def __init__(self, dialect: Dialect, namespace: str, max_shapes: int = 2000) -> None:
        self._dialect = dialect
        self._namespace = namespace
        self._max_shapes = max_shapes
        self._shapes: dict[Any, str] = {}
        self._digests: dict[str, str] = {}  # shape and values -> key (see _MAX_DIGESTS)
        # statement -> (its shape, its bound values): repositories reuse a statement per
        # shape, so a hit neither hashes SQLAlchemy's (large) cache key nor the SQL text
        self._known: weakref.WeakKeyDictionary[Any, tuple[str, list[Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def key(self, statement: Any, params: Mapping[str, Any] | None = None) -> str:
        """The key of ``statement`` executed with ``params``.

        Args:
            statement: The statement.
            params: Bound parameters passed apart from the statement.

        Returns:
            The key: a digest, never the SQL with its values.
        """
        return self.key_and_shape(statement, params)[0]

    def key_and_shape(
        self, statement: Any, params: Mapping[str, Any] | None = None
    ) -> tuple[str, str | None]:
        """The key, and the statement's shape.

        Args:
            statement: The statement.
            params: Bound parameters passed apart from the statement.

        Returns:
            The key, and the shape (a digest of the SQL compiled for the dialect, values left
            out; None when SQLAlchemy cannot key the statement).
        """
        known = self._known.get(statement)
        keyable = True
        if known is None:
            shape, values, keyable, fixed = self._shape_and_values(statement)
            if fixed:
                self._known[statement] = (shape, values)
        else:
            shape, values = known
        if params:
            values = [*values, sorted(params.items())]
        written = repr(values)
        if " at 0x" in written and ADDRESS.search(written):  # the find first: a hit's cost
            return UNKEYABLE, shape if keyable else None
        material = f"{shape}\x00{written}"
        key = self._digests.get(material)
        if key is None:
            digest = hashlib.blake2b(material.encode(), digest_size=20).hexdigest()
            key = f"{self._namespace}:e:{digest}"
            if len(material) <= _MAX_DIGESTED_CHARS:
                if len(self._digests) >= _MAX_DIGESTS:
                    self._digests.clear()
                self._digests[material] = key
        return key, shape if keyable else None

    def _shape_and_values(self, statement: Any) -> tuple[str, list[Any], bool, bool]:
        """The shape and bound values of ``statement``, whether SQLAlchemy can key it, and
        whether both are fixed for this statement object (no value computed at execution)."""
        cache_key = statement._generate_cache_key()
        if cache_key is None:  # a construct SQLAlchemy cannot key: compile it every time
            text, compiled_params = self._compile(statement)
            return text, sorted(compiled_params.items()), False, False
        shape = self._shapes.get(cache_key.key)
        if shape is None:
            if len(self._shapes) >= self._max_shapes:
                self._shapes.clear()
            text = self._compile(statement)[0]
            shape = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
            self._shapes[cache_key.key] = shape
        # in statement order: anonymous parameter names differ between equal statements
        values = [bind.effective_value for bind in cache_key.bindparams]
        fixed = all(bind.callable is None for bind in cache_key.bindparams)
        try:
            weakref.ref(statement)
        except TypeError:
            fixed = False
        return shape, values, True, fixed

    def _compile(self, statement: Any) -> tuple[str, dict[str, Any]]:
        compiled = statement.compile(dialect=self._dialect)
        options = "".join(
            ADDRESS.sub("", repr(option._generate_cache_key()))
            for option in getattr(statement, "_with_options", ())
            if hasattr(option, "_generate_cache_key")
        )
        return f"{compiled}\x00{options}", dict(compiled.params)


def tenant_part(tables: Iterable[str]) -> str | None:
    """What the context's tenant adds to the key of a read of ``tables``.

    Args:
        tables: The tables the read depends on.

    Returns:
        ``""`` when none is tenant-scoped; None when one is and no tenant is set (the read
        must go to the database, whose scoping refuses it or hides every tenant's rows); else
        the part naming the tenant (a digest: tenant ids may hold any character), or
        every tenant's under ``every_tenant()``.
    """
    if not names_scoped(tables):
        return ""
    if scoping_off():
        return ":every"
    current = current_tenant()
    if current is None:
        return None
    return ":t:" + hashlib.blake2b(current.encode(), digest_size=16).hexdigest()


def schema_part(session: Any, statement: Any) -> str:
    """What a ``schema_translate_map`` adds to the key of a read: under another map the same
    statement reads another schema's tables (a schema per tenant), so each map has entries
    of its own. The map may be on the statement, on the session's bind, or on a connection
    the session's transaction holds (``session.connection(execution_options=...)``).

    Args:
        session: The ORM Session reading.
        statement: The statement read.

    Returns:
        ``""`` without a map (the usual case), else a digest of the maps in force.
    """
    # private attributes, read directly: this runs on every cached read (a memory hit is ~30
    # us), and with the public getters and SessionTransaction's walk to its root it took
    # 1.4 us instead of 0.6 (timeit, inside a transaction holding a connection)
    options = [getattr(statement, "_execution_options", _NO_OPTIONS)]
    if session.bind is not None:
        options.append(session.bind._execution_options)
    transaction = session._transaction
    if transaction is not None:  # nested transactions share their root's connections
        for held in transaction._connections.values():
            options.append(held[0]._execution_options)
    found = {_schemas_of(o[_TRANSLATE]) for o in options if o.get(_TRANSLATE)}
    if not found:
        return ""
    material = repr(sorted(found, key=repr))  # a set: one connection may be held twice
    return ":s:" + hashlib.blake2b(material.encode(), digest_size=16).hexdigest()


def _schemas_of(translate_map: Mapping[Any, Any]) -> tuple[tuple[str, str], ...]:
    # SQLAlchemy adds "_none" beside None to a map it has executed with: one entry, for a key
    # that must not change after the first execution
    pairs = {(repr(None if k == "_none" else k), repr(v)) for k, v in translate_map.items()}
    return tuple(sorted(pairs))


def namespace_part(url: URL) -> str:
    """What the URL adds to the namespace of a database's entries beyond its id (user, host,
    port, name), where that id cannot tell apart what the same SQL reads: PostgreSQL's session
    options (``?options=-csearch_path=tenant_one``: another ``search_path`` reads another
    schema's tables), and a SQLite file named by a relative path (``sqlite:///app.db``, another
    file in another working directory). Two such databases sharing a backend served each
    other's entries. Only the entries: the tokens stay the id's, so a write through either
    still invalidates the other's same-named tables (a miss, never a stale read).

    Args:
        url: The database's URL.

    Returns:
        ``""`` for neither (the usual case), else a digest of them.
    """
    material = []
    if options := url.query.get("options"):
        material.append(repr(options))
    path = url.database or ""
    relative = path and not os.path.isabs(path) and not path.startswith("file:")
    if relative and url.get_backend_name() == "sqlite" and not is_memory_sqlite(url):
        material.append(os.path.abspath(path))
    if not material:
        return ""
    return "~" + hashlib.blake2b(repr(material).encode(), digest_size=8).hexdigest()
